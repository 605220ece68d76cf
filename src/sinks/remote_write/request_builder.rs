//! One cycle's families → one `WriteRequest` → snappy-compressed bytes. Pure: no I/O, no
//! clock (the caller gives the timestamp).
//!
//! It also remembers which series it has written and not yet ended, so it can end them
//! with a staleness marker: in the next request for a series that vanished between two
//! cycles (a command or locale gone), as Prometheus does for a scrape, and for all of
//! them at job end. The end request also marks again every series that vanished during
//! the job: the request that carried its first marker may have been shed by a full queue
//! while a receiver was down, and the series would then linger for five minutes.
//!
//! A series is remembered by its labels as they are encoded in a request: one block of
//! bytes, made when the series first appears and written as it is into every request
//! after, so that a series already live costs no allocation.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::proto;
use crate::model::Family;

/// The metric-name label of the remote-write data model.
const NAME_LABEL: &str = "__name__";

/// A request ready to send, with what it carries (for counting and logging).
#[derive(Clone, Debug)]
pub struct Encoded {
    pub body: Bytes,
    pub samples: usize,
    pub stale_markers: usize,
    /// The timestamp every sample of the request has, in ms.
    pub timestamp_ms: i64,
}

/// Why a request could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot snappy-compress a remote-write request: {0}")]
pub struct EncodeError(#[from] snap::Error);

/// A series' full, sorted label set, encoded ([`proto::put_label`] after one another).
type Key = Box<[u8]>;

/// Builds the requests of one job for one receiver.
pub struct RequestBuilder {
    /// The job's grouping labels (`job`, `slurm_job_id`, `cluster`, static labels): the
    /// labels the Pushgateway would add, without its `instance=""`.
    grouping: Vec<(String, String)>,
    /// Series written and not yet ended, with the number of the last cycle that had them.
    live: HashMap<Key, u64>,
    /// Series that vanished during the job (marked once already), marked again at the end.
    vanished: HashSet<Key>,
    /// Cycles built so far.
    cycles: u64,
    /// The last timestamp used: a later request never goes back in time, even if the
    /// wall clock does (a receiver rejects an out-of-order sample, and Prometheus then
    /// rolls back the whole request).
    last_ms: i64,
    compressor: snap::raw::Encoder,
    /// Reused from request to request: the request being written, a series' encoded labels.
    raw: Vec<u8>,
    key: Vec<u8>,
}

impl RequestBuilder {
    pub fn new(grouping: &[(String, String)]) -> RequestBuilder {
        RequestBuilder {
            grouping: grouping.to_vec(),
            live: HashMap::new(),
            vanished: HashSet::new(),
            cycles: 0,
            last_ms: i64::MIN,
            compressor: snap::raw::Encoder::new(),
            raw: Vec::new(),
            key: Vec::new(),
        }
    }

    /// How many series are written and not yet ended.
    pub fn live_series(&self) -> usize {
        self.live.len()
    }

    fn stamp(&mut self, now_ms: i64) -> i64 {
        let t = now_ms.max(self.last_ms.saturating_add(1));
        self.last_ms = t;
        t
    }

    /// The request of one cycle: every counter and gauge sample at `now_ms`, plus a
    /// staleness marker at the same time for every series of an earlier cycle that is
    /// not in this one.
    pub fn cycle(&mut self, families: &[Family], now_ms: i64) -> Result<Encoded, EncodeError> {
        let ts = self.stamp(now_ms);
        self.cycles += 1;
        let cycle = self.cycles;
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let mut samples = 0;
        let mut labels = Vec::with_capacity(self.grouping.len() + 4);
        for family in families {
            // Counters and gauges alike: one sample per series.
            for s in family.series() {
                series_labels(&self.grouping, family.name(), s.labels(), &mut labels);
                self.key.clear();
                for (n, v) in &labels {
                    proto::put_label(&mut self.key, n, v);
                }
                match self.live.get_mut(&self.key[..]) {
                    // translate drops duplicates already; a second one here would be a
                    // second sample at the same time, which receivers reject.
                    Some(seen) if *seen == cycle => continue,
                    Some(seen) => *seen = cycle,
                    None => {
                        // A series back after it vanished is no longer vanished.
                        if !self.vanished.is_empty() {
                            self.vanished.remove(&self.key[..]);
                        }
                        self.live.insert(self.key.as_slice().into(), cycle);
                    }
                }
                proto::put_series(&mut raw, &self.key, s.value(), ts);
                samples += 1;
            }
        }
        let mut ended: Vec<Key> = Vec::new();
        if self.live.len() > samples {
            ended.extend(
                self.live
                    .extract_if(|_, seen| *seen != cycle)
                    .map(|(k, _)| k),
            );
        }
        sort(&mut ended);
        let stale_markers = ended.len();
        for labels in &ended {
            proto::put_series(&mut raw, labels, proto::stale_nan(), ts);
        }
        self.vanished.extend(ended);
        let encoded = self.finish(&raw, samples, stale_markers, ts);
        self.raw = raw;
        encoded
    }

    /// The request that ends every live series: a staleness marker for each, at
    /// `now_ms` (never before the last sample: Prometheus rejects an older marker with
    /// HTTP 400 and rolls back the whole request). None when nothing is live.
    pub fn end(&mut self, now_ms: i64) -> Result<Option<Encoded>, EncodeError> {
        if self.live.is_empty() && self.vanished.is_empty() {
            return Ok(None);
        }
        let ts = self.stamp(now_ms);
        let mut ended: Vec<Key> = self
            .live
            .drain()
            .map(|(k, _)| k)
            .chain(self.vanished.drain())
            .collect();
        sort(&mut ended);
        let mut raw = Vec::new();
        for labels in &ended {
            proto::put_series(&mut raw, labels, proto::stale_nan(), ts);
        }
        self.finish(&raw, 0, ended.len(), ts).map(Some)
    }

    fn finish(
        &mut self,
        raw: &[u8],
        samples: usize,
        stale_markers: usize,
        ts: i64,
    ) -> Result<Encoded, EncodeError> {
        let body = self.compressor.compress_vec(raw)?;
        Ok(Encoded {
            body: Bytes::from(body),
            samples,
            stale_markers,
            timestamp_ms: ts,
        })
    }
}

/// Label sets in order: label by label, by name then value (byte-wise), a shorter set
/// before a longer one it begins.
fn sort(keys: &mut [Key]) {
    keys.sort_by(|a, b| proto::labels_of(a).cmp(proto::labels_of(b)));
}

/// The label set of one series into `out` (cleared first): `__name__`, the grouping
/// labels, then the series' own, sorted by name as the spec requires (byte-wise). A label
/// with an empty value is left out: in Prometheus' data model it is the same as no label
/// (a scrape drops it too), and the spec forbids empty values. A series label never
/// repeats a grouping label's name (the configuration refuses such static labels); should
/// one, the series' own wins, as with the Pushgateway's `honor_labels`.
pub fn series_labels<'a, 'n: 'a, 'v: 'a>(
    grouping: &'a [(String, String)],
    name: &'a str,
    own: impl Iterator<Item = (&'n str, &'v str)>,
    out: &mut Vec<(&'a str, &'a str)>,
) {
    out.clear();
    out.push((NAME_LABEL, name));
    for (n, v) in own {
        if !v.is_empty() {
            out.push((n, v));
        }
    }
    for (n, v) in grouping {
        if !v.is_empty() && !out.iter().any(|(o, _)| o == n) {
            out.push((n, v));
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::proto::reference::{Label, Sample, TimeSeries, WriteRequest};
    use super::*;
    use crate::model::{leak_def, Kind};
    use prost::Message as _;

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn gauge_family(name: &str, series: &[(&[(&'static str, &str)], f64)]) -> Family {
        let mut f = Family::new(leak_def(name, "", Kind::Gauge));
        for (labels, v) in series {
            f.push(labels, *v);
        }
        f
    }

    fn decode(e: &Encoded) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&e.body)
            .expect("snappy");
        WriteRequest::decode(raw.as_slice()).expect("protobuf")
    }

    fn grouping() -> Vec<(String, String)> {
        vec![
            ("job".into(), "arkouda".into()),
            ("slurm_job_id".into(), "42".into()),
            ("cluster".into(), "c1".into()),
            ("site".into(), "x".into()),
        ]
    }

    /// Field numbers and wire types pinned against bytes worked out by hand from
    /// remote.proto/types.proto.
    #[test]
    fn protobuf_encoding_matches_known_bytes() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("__name__", "up")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
            }],
        };
        let want: &[u8] = &[
            0x0a, 0x1e, // WriteRequest.timeseries (1, LEN), 30 bytes
            0x0a, 0x0e, // TimeSeries.labels (1, LEN), 14 bytes
            0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', // Label.name
            0x12, 0x02, b'u', b'p', // Label.value
            0x12, 0x0c, // TimeSeries.samples (2, LEN), 12 bytes
            0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // Sample.value (1, I64) = 1.0
            0x10, 0xe8, 0x07, // Sample.timestamp (2, VARINT) = 1000
        ];
        assert_eq!(req.encode_to_vec(), want);
        assert_eq!(WriteRequest::decode(want).unwrap(), req);
        // The hand-written encoding, the one sent.
        let mut labels = Vec::new();
        proto::put_label(&mut labels, "__name__", "up");
        let mut raw = Vec::new();
        proto::put_series(&mut raw, &labels, 1.0, 1000);
        assert_eq!(raw, want);
    }

    #[test]
    fn stale_nan_bit_pattern() {
        assert_eq!(proto::stale_nan().to_bits(), 0x7ff0_0000_0000_0002);
        assert!(proto::stale_nan().is_nan());
        assert!(proto::is_stale_nan(proto::stale_nan()));
        // A NaN from arithmetic is a value, not a marker.
        assert!(!proto::is_stale_nan(f64::NAN));
        let s = Sample {
            value: proto::stale_nan(),
            timestamp: 0,
        };
        assert_eq!(s.encode_to_vec(), [0x09, 0x02, 0, 0, 0, 0, 0, 0xf0, 0x7f]);
    }

    #[test]
    fn snappy_round_trip() {
        let ids: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let pairs: Vec<[(&str, &str); 1]> = ids.iter().map(|i| [("locale", i.as_str())]).collect();
        let series: Vec<(&[(&str, &str)], f64)> = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (&p[..], i as f64))
            .collect();
        let fam = gauge_family("arkouda_locale_memory_used_bytes", &series);
        let mut b = RequestBuilder::new(&grouping());
        let e = b.cycle(&[fam], 1_700_000_000_000).unwrap();
        // Snappy block format (no framing): the body starts with the varint length of
        // the uncompressed message.
        let raw = snap::raw::Decoder::new().decompress_vec(&e.body).unwrap();
        assert_eq!(snap::raw::decompress_len(&e.body).unwrap(), raw.len());
        assert!(
            e.body.len() < raw.len() / 2,
            "{} of {}",
            e.body.len(),
            raw.len()
        );
        let req = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 200);
        assert_eq!(req.timeseries[7].samples[0].value, 7.0);
        let mut again = snap::raw::Encoder::new();
        let round = snap::raw::Decoder::new()
            .decompress_vec(&again.compress_vec(&raw).unwrap())
            .unwrap();
        assert_eq!(round, raw);
    }

    #[test]
    fn labels_sorted_grouping_added_empty_dropped() {
        let g = grouping();
        let mut got = Vec::new();
        series_labels(
            &g,
            "arkouda_requests_total",
            [("command", "sum"), ("user", ""), ("Zeta", "z")].into_iter(),
            &mut got,
        );
        assert_eq!(
            got,
            vec![
                ("Zeta", "z"), // byte-wise: upper case before `_` and lower case
                ("__name__", "arkouda_requests_total"),
                ("cluster", "c1"),
                ("command", "sum"),
                ("job", "arkouda"),
                ("site", "x"),
                ("slurm_job_id", "42"),
            ]
        );
        let mut sorted = got.clone();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        assert_eq!(got, sorted);
        // No `instance` label: the Pushgateway's instance="" is not ours to add.
        assert!(got.iter().all(|l| l.0 != "instance"));
    }

    /// Label sets: any strings, empty ones included (proto3 leaves those out).
    fn label_sets() -> impl proptest::strategy::Strategy<Value = Vec<Vec<(String, String)>>> {
        use proptest::prelude::any;
        proptest::collection::vec(
            proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::strategy::Just(String::new()),
                        any::<String>(),
                        "[a-c]{1,2}"
                    ],
                    proptest::prop_oneof![
                        proptest::strategy::Just(String::new()),
                        any::<String>(),
                        "[a-c]{1,2}"
                    ],
                ),
                0..4,
            ),
            0..6,
        )
    }

    fn key(labels: &[(String, String)]) -> Key {
        let mut k = Vec::new();
        for (n, v) in labels {
            proto::put_label(&mut k, n, v);
        }
        k.into()
    }

    fn reference_labels(labels: &[(String, String)]) -> Vec<Label> {
        labels
            .iter()
            .map(|(n, v)| Label {
                name: n.clone(),
                value: v.clone(),
            })
            .collect()
    }

    proptest::proptest! {
        /// The hand-written encoding is byte for byte `prost`'s, for any labels, values
        /// (0, -0, NaN, the staleness marker) and timestamps (0, negative).
        #[test]
        fn encoding_equals_prost(
            sets in label_sets(),
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<f64>(),
                    proptest::sample::select(vec![0.0, -0.0, 1.0, f64::NAN, proto::stale_nan()]),
                ],
                6,
            ),
            stamps in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(0i64), proptest::prelude::any::<i64>()],
                6,
            ),
        ) {
            let mut raw = Vec::new();
            let mut req = WriteRequest::default();
            for (i, labels) in sets.iter().enumerate() {
                proto::put_series(&mut raw, &key(labels), values[i], stamps[i]);
                req.timeseries.push(TimeSeries {
                    labels: reference_labels(labels),
                    samples: vec![Sample { value: values[i], timestamp: stamps[i] }],
                });
            }
            proptest::prop_assert_eq!(&raw, &req.encode_to_vec());
        }

        /// Encoded label sets read back, and sort as the label sets do.
        #[test]
        fn encoded_label_sets_read_back_and_sort_alike(sets in label_sets()) {
            for labels in &sets {
                let k = key(labels);
                let back: Vec<(&[u8], &[u8])> = proto::labels_of(&k).collect();
                let want: Vec<(&[u8], &[u8])> =
                    labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
                proptest::prop_assert_eq!(back, want);
            }
            let mut keys: Vec<Key> = sets.iter().map(|l| key(l)).collect();
            sort(&mut keys);
            let mut want: Vec<Vec<Label>> = sets.iter().map(|l| reference_labels(l)).collect();
            want.sort();
            let want: Vec<Key> = want
                .iter()
                .map(|l| {
                    key(&l.iter().map(|l| (l.name.clone(), l.value.clone())).collect::<Vec<_>>())
                })
                .collect();
            proptest::prop_assert_eq!(keys, want);
        }
    }

    /// A family of locales 0 and 1, and the same with locale 0 alone.
    fn locales_two_then_one() -> (Family, Family) {
        (
            gauge_family(
                "arkouda_locale_memory_used_bytes",
                &[(&[("locale", "0")], 1.0), (&[("locale", "1")], 2.0)],
            ),
            gauge_family(
                "arkouda_locale_memory_used_bytes",
                &[(&[("locale", "0")], 3.0)],
            ),
        )
    }

    /// A series that comes back after it vanished is live again: the end marks it once.
    #[test]
    fn a_series_back_is_live_again() {
        let mut b = RequestBuilder::new(&grouping());
        let (two, one) = locales_two_then_one();
        b.cycle(std::slice::from_ref(&two), 1000).unwrap();
        let e = b.cycle(std::slice::from_ref(&one), 2000).unwrap();
        assert_eq!((e.samples, e.stale_markers), (1, 1));
        let e = b.cycle(std::slice::from_ref(&two), 3000).unwrap();
        assert_eq!((e.samples, e.stale_markers), (2, 0));
        let end = b.end(4000).unwrap().expect("two live series");
        assert_eq!((end.samples, end.stale_markers), (0, 2));
        assert_eq!(decode(&end).timeseries.len(), 2);
    }

    /// A series twice in one cycle (the same labels once empty values are left out) is
    /// sent once: receivers reject a second sample at the same time.
    #[test]
    fn a_label_set_is_sent_once_per_cycle() {
        let mut b = RequestBuilder::new(&grouping());
        let f = gauge_family(
            "arkouda_job_info",
            &[
                (&[("user", "alice"), ("partition", "")], 1.0),
                (&[("user", "alice")], 2.0),
            ],
        );
        let e = b.cycle(std::slice::from_ref(&f), 1000).unwrap();
        assert_eq!((e.samples, e.stale_markers), (1, 0));
        assert_eq!(decode(&e).timeseries[0].samples[0].value, 1.0);
        assert_eq!(b.live_series(), 1);
    }

    #[test]
    fn vanished_series_get_a_marker_in_the_next_request_and_all_at_the_end() {
        let mut b = RequestBuilder::new(&grouping());
        let (two, one) = locales_two_then_one();
        let e1 = b.cycle(std::slice::from_ref(&two), 1000).unwrap();
        assert_eq!((e1.samples, e1.stale_markers), (2, 0));
        // The clock went back: the request still moves forward in time.
        let e2 = b.cycle(std::slice::from_ref(&one), 900).unwrap();
        assert_eq!((e2.samples, e2.stale_markers), (1, 1));
        assert_eq!(e2.timestamp_ms, 1001);
        let req = decode(&e2);
        let stale: Vec<&TimeSeries> = req
            .timeseries
            .iter()
            .filter(|t| proto::is_stale_nan(t.samples[0].value))
            .collect();
        assert_eq!(stale.len(), 1);
        assert!(stale[0].labels.contains(&label("locale", "1")));
        assert_eq!(stale[0].samples[0].timestamp, 1001);
        assert_eq!(b.live_series(), 1);

        // The end marks the live series and, again, the one that vanished (its first
        // marker may have been shed by a full queue).
        let end = b.end(5000).unwrap().expect("one live series");
        assert_eq!((end.samples, end.stale_markers), (0, 2));
        let req = decode(&end);
        assert_eq!(req.timeseries.len(), 2);
        assert!(req.timeseries[0].labels.contains(&label("locale", "0")));
        assert!(req.timeseries[1].labels.contains(&label("locale", "1")));
        for t in &req.timeseries {
            assert!(proto::is_stale_nan(t.samples[0].value));
            assert_eq!(t.samples[0].timestamp, 5000);
        }
        assert!(b.end(6000).unwrap().is_none(), "nothing left to end");
    }
}
