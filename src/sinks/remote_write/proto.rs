//! The remote-write 1.0 wire messages, written by hand from `prompb/remote.proto` and
//! `prompb/types.proto` of Prometheus (only the fields this sender fills: no metadata,
//! exemplars or native histograms). Hand-written so that the build needs no `protoc` and
//! no `build.rs`; the field numbers below are the contract and are pinned by a test
//! against a known byte string.

/// `prometheus.WriteRequest`. Field 2 is reserved upstream; 3 (metadata) is not sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: sorted labels and samples in timestamp order.
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

/// `prometheus.Sample`: a value and its time in milliseconds since the Unix epoch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
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
