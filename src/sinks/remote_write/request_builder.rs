//! One cycle's families → one `WriteRequest` → snappy-compressed bytes. Pure: no I/O, no
//! clock (the caller gives the timestamp).
//!
//! It also remembers which series it has written and not yet ended, so it can end them
//! with a staleness marker: in the next request for a series that vanished between two
//! cycles (a command or locale gone), as Prometheus does for a scrape, and for all of
//! them at job end. The end request also marks again every series that vanished during
//! the job: the request that carried its first marker may have been shed by a full queue
//! while a receiver was down, and the series would then linger for five minutes.

use std::collections::HashSet;

use bytes::Bytes;
use prost::Message as _;

use super::proto::{self, Label, Sample, TimeSeries, WriteRequest};
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

/// Builds the requests of one job for one receiver.
pub struct RequestBuilder {
    /// The job's grouping labels (`job`, `slurm_job_id`, `cluster`, static labels): the
    /// labels the Pushgateway would add, without its `instance=""`.
    grouping: Vec<Label>,
    /// Series written and not yet ended (their full, sorted label sets).
    live: HashSet<Vec<Label>>,
    /// Series that vanished during the job (marked once already), marked again at the end.
    vanished: HashSet<Vec<Label>>,
    /// The last timestamp used: a later request never goes back in time, even if the
    /// wall clock does (a receiver rejects an out-of-order sample, and Prometheus then
    /// rolls back the whole request).
    last_ms: i64,
    compressor: snap::raw::Encoder,
}

impl RequestBuilder {
    pub fn new(grouping: &[(String, String)]) -> RequestBuilder {
        RequestBuilder {
            grouping: grouping
                .iter()
                .map(|(name, value)| Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            live: HashSet::new(),
            vanished: HashSet::new(),
            last_ms: i64::MIN,
            compressor: snap::raw::Encoder::new(),
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
        let mut series = Vec::with_capacity(families.iter().map(Family::len).sum());
        let mut current = HashSet::with_capacity(self.live.len());
        for family in families {
            // Counters and gauges alike: one sample per series.
            for s in family.series() {
                let value = s.value();
                let labels = series_labels(&self.grouping, family.name(), s.labels());
                // translate drops duplicates already; a second one here would be a
                // second sample at the same time, which receivers reject.
                if !current.insert(labels.clone()) {
                    continue;
                }
                series.push(TimeSeries {
                    labels,
                    samples: vec![Sample {
                        value,
                        timestamp: ts,
                    }],
                });
            }
        }
        let samples = series.len();
        let mut ended: Vec<Vec<Label>> = self.live.difference(&current).cloned().collect();
        ended.sort();
        for labels in &current {
            self.vanished.remove(labels);
        }
        self.vanished.extend(ended.iter().cloned());
        let stale_markers = ended.len();
        series.extend(ended.into_iter().map(|labels| stale_series(labels, ts)));
        self.live = current;
        self.finish(series, samples, stale_markers, ts)
    }

    /// The request that ends every live series: a staleness marker for each, at
    /// `now_ms` (never before the last sample: Prometheus rejects an older marker with
    /// HTTP 400 and rolls back the whole request). None when nothing is live.
    pub fn end(&mut self, now_ms: i64) -> Result<Option<Encoded>, EncodeError> {
        if self.live.is_empty() && self.vanished.is_empty() {
            return Ok(None);
        }
        let ts = self.stamp(now_ms);
        let mut ended: Vec<Vec<Label>> = self.live.drain().chain(self.vanished.drain()).collect();
        ended.sort();
        let n = ended.len();
        let series = ended
            .into_iter()
            .map(|labels| stale_series(labels, ts))
            .collect();
        self.finish(series, 0, n, ts).map(Some)
    }

    fn finish(
        &mut self,
        timeseries: Vec<TimeSeries>,
        samples: usize,
        stale_markers: usize,
        ts: i64,
    ) -> Result<Encoded, EncodeError> {
        let raw = WriteRequest { timeseries }.encode_to_vec();
        let body = self.compressor.compress_vec(&raw)?;
        Ok(Encoded {
            body: Bytes::from(body),
            samples,
            stale_markers,
            timestamp_ms: ts,
        })
    }
}

fn stale_series(labels: Vec<Label>, ts: i64) -> TimeSeries {
    TimeSeries {
        labels,
        samples: vec![Sample {
            value: proto::stale_nan(),
            timestamp: ts,
        }],
    }
}

/// The label set of one series: `__name__`, the grouping labels, then the series' own,
/// sorted by name as the spec requires (byte-wise). A label with an empty value is left
/// out: in Prometheus' data model it is the same as no label (a scrape drops it too), and
/// the spec forbids empty values. A series label never repeats a grouping label's name
/// (the configuration refuses such static labels); should one, the series' own wins, as
/// with the Pushgateway's `honor_labels`.
pub fn series_labels<'n, 'v>(
    grouping: &[Label],
    name: &str,
    own: impl Iterator<Item = (&'n str, &'v str)>,
) -> Vec<Label> {
    let mut labels: Vec<Label> = Vec::with_capacity(grouping.len() + 4);
    labels.push(Label {
        name: NAME_LABEL.to_string(),
        value: name.to_string(),
    });
    for (n, v) in own {
        if !v.is_empty() {
            labels.push(Label {
                name: n.to_string(),
                value: v.to_string(),
            });
        }
    }
    for g in grouping {
        if !g.value.is_empty() && !labels.iter().any(|l| l.name == g.name) {
            labels.push(g.clone());
        }
    }
    labels.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{leak_def, Kind};

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
        let g: Vec<Label> = grouping().into_iter().map(|(n, v)| label(&n, &v)).collect();
        let got = series_labels(
            &g,
            "arkouda_requests_total",
            [("command", "sum"), ("user", ""), ("Zeta", "z")].into_iter(),
        );
        assert_eq!(
            got,
            vec![
                label("Zeta", "z"), // byte-wise: upper case before `_` and lower case
                label("__name__", "arkouda_requests_total"),
                label("cluster", "c1"),
                label("command", "sum"),
                label("job", "arkouda"),
                label("site", "x"),
                label("slurm_job_id", "42"),
            ]
        );
        let mut sorted = got.clone();
        sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        assert_eq!(got, sorted);
        // No `instance` label: the Pushgateway's instance="" is not ours to add.
        assert!(got.iter().all(|l| l.name != "instance"));
    }

    #[test]
    fn vanished_series_get_a_marker_in_the_next_request_and_all_at_the_end() {
        let mut b = RequestBuilder::new(&grouping());
        let two = gauge_family(
            "arkouda_locale_memory_used_bytes",
            &[(&[("locale", "0")], 1.0), (&[("locale", "1")], 2.0)],
        );
        let one = gauge_family(
            "arkouda_locale_memory_used_bytes",
            &[(&[("locale", "0")], 3.0)],
        );
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
