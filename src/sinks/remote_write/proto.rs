//! The remote-write 1.0 wire messages of `prompb/remote.proto` and `prompb/types.proto` of
//! Prometheus (only the fields this sender fills: no metadata, exemplars or native
//! histograms), written by hand: a `WriteRequest` is written straight from the cycle's
//! families into one buffer, with no message structs and no `String` per label. The field
//! numbers below are the contract; the tests pin them against a known byte string and
//! against `prost`'s encoding of the same messages (the structs at the end, test-only).
//!
//! ```text
//! message WriteRequest { repeated TimeSeries timeseries = 1; }        // 2 reserved, 3 not sent
//! message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! message Label        { string name = 1; string value = 2; }
//! message Sample       { double value = 1; int64 timestamp = 2; }       // ms since the epoch
//! ```
//!
//! As every proto3 encoder does, a field with its default value (an empty string, 0.0 or
//! -0.0, a 0 timestamp) is left out; an element of a repeated field never is.

/// Tag byte of a length-delimited field 1 (`WriteRequest.timeseries`, `TimeSeries.labels`,
/// `Label.name`).
const LEN_1: u8 = 0x0a;
/// Tag byte of a length-delimited field 2 (`TimeSeries.samples`, `Label.value`).
const LEN_2: u8 = 0x12;
/// Tag byte of `Sample.value` (field 1, 64-bit).
const I64_1: u8 = 0x09;
/// Tag byte of `Sample.timestamp` (field 2, varint).
const VARINT_2: u8 = 0x10;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A string field (left out when empty).
fn string_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        1 + varint_len(s.len() as u64) + s.len()
    }
}

fn put_string(buf: &mut Vec<u8>, tag: u8, s: &str) {
    if !s.is_empty() {
        buf.push(tag);
        put_varint(buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Appends one label as a `TimeSeries.labels` element: a series' labels, one after
/// another in order, are the first part of its `TimeSeries`.
pub fn put_label(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.push(LEN_1);
    put_varint(buf, (string_len(name) + string_len(value)) as u64);
    put_string(buf, LEN_1, name);
    put_string(buf, LEN_2, value);
}

/// Appends one `WriteRequest.timeseries` element: the series' `labels` (from
/// [`put_label`]) and one sample.
pub fn put_series(buf: &mut Vec<u8>, labels: &[u8], value: f64, timestamp_ms: i64) {
    // `value != 0.0` leaves out -0.0 too, as proto3 encoders do.
    let sample = if value != 0.0 { 9 } else { 0 }
        + if timestamp_ms != 0 {
            1 + varint_len(timestamp_ms as u64)
        } else {
            0
        };
    let series = labels.len() + 1 + varint_len(sample as u64) + sample;
    buf.push(LEN_1);
    put_varint(buf, series as u64);
    buf.extend_from_slice(labels);
    buf.push(LEN_2);
    put_varint(buf, sample as u64);
    if value != 0.0 {
        buf.push(I64_1);
        buf.extend_from_slice(&value.to_le_bytes());
    }
    if timestamp_ms != 0 {
        buf.push(VARINT_2);
        put_varint(buf, timestamp_ms as u64);
    }
}

/// The (name, value) pairs of labels written by [`put_label`], in order; stops at
/// anything else.
pub fn labels_of(mut labels: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let (tag, label) = field(&mut labels)?;
        if tag != LEN_1 {
            return None;
        }
        let (mut label, mut pair) = (label, (&[][..], &[][..]));
        while let Some((tag, s)) = field(&mut label) {
            match tag {
                LEN_1 => pair.0 = s,
                LEN_2 => pair.1 = s,
                _ => return None,
            }
        }
        Some(pair)
    })
}

/// One length-delimited field off the front of `buf`: its tag byte and its bytes.
fn field<'b>(buf: &mut &'b [u8]) -> Option<(u8, &'b [u8])> {
    let (&tag, mut rest) = buf.split_first()?;
    let mut len = 0usize;
    for shift in (0..64).step_by(7) {
        let (&b, r) = rest.split_first()?;
        rest = r;
        len |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            let bytes = rest.get(..len)?;
            *buf = rest.get(len..)?;
            return Some((tag, bytes));
        }
    }
    None
}

/// The bits of Prometheus' staleness marker (`value.StaleNaN`): a NaN that a receiver
/// reads as "this series ended here", unlike any NaN arithmetic produces (0x7ff8…).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Is `v` the staleness marker (compared by bits: every NaN is unequal to itself)?
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// `prost` messages of the same protocol: the reference the hand-written encoding is
/// tested against, and the decoder of the tests.
#[cfg(test)]
pub mod reference {
    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `prometheus.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// `prometheus.Label`.
    #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}
