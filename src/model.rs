//! One cycle's metric families, in the agent's own model, and their text exposition.
//! `translate` builds them once per cycle; every sink reads them (the Pushgateway and
//! listen sinks through [`encode_text`], remote write series by series).
//!
//! Built for a cycle of tens of thousands of series made anew every few seconds: a
//! family keeps its series' values, their labels and the labels' values each in one
//! vector (the values' text one after another in one `String`), so that a series costs
//! no allocation of its own, and dropping a cycle frees three blocks per family. Label
//! names are `&'static str`: every name a series carries is one of the agent's own
//! (`translate::SERIES_LABELS`); the grouping labels, which come from the settings, are
//! never in the model: each sink adds them its way (the listen sink through
//! [`encode_text`]'s `first` labels).
//!
//! Only what the agent emits: counters and gauges, one value per series, no timestamps.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric name with its fixed HELP and TYPE.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// One label of a series: its name, and where its value is in the family's text.
#[derive(Clone, Copy, Debug)]
struct Label {
    name: &'static str,
    start: usize,
    end: usize,
}

/// One series: its labels (`labels[first..end]` of the family) and its value.
#[derive(Clone, Copy, Debug)]
struct Slot {
    first: usize,
    end: usize,
    value: f64,
}

/// The series of one metric name, in the order they were added.
#[derive(Clone)]
pub struct Family {
    pub def: &'static Def,
    slots: Vec<Slot>,
    labels: Vec<Label>,
    text: String,
}

/// One series of a [`Family`], borrowed from it.
#[derive(Clone, Copy)]
pub struct Series<'f> {
    family: &'f Family,
    slot: &'f Slot,
}

impl<'f> Series<'f> {
    pub fn value(&self) -> f64 {
        self.slot.value
    }

    /// Its labels in the order they were given: (name, value).
    pub fn labels(&self) -> impl ExactSizeIterator<Item = (&'static str, &'f str)> + Clone + 'f {
        let f = self.family;
        f.labels[self.slot.first..self.slot.end]
            .iter()
            .map(move |l| (l.name, &f.text[l.start..l.end]))
    }

    /// The value of its label `name`, if it has one.
    pub fn label(&self, name: &str) -> Option<&'f str> {
        self.labels().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn same_labels(&self, other: &Series<'_>) -> bool {
        self.labels().len() == other.labels().len() && self.labels().eq(other.labels())
    }
}

impl fmt::Debug for Series<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.labels()).finish()?;
        write!(f, " {}", self.value())
    }
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.def.name)
            .field("series", &self.series().collect::<Vec<_>>())
            .finish()
    }
}

impl Family {
    pub fn new(def: &'static Def) -> Family {
        Family {
            def,
            slots: Vec::new(),
            labels: Vec::new(),
            text: String::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.def.name
    }

    pub fn help(&self) -> &'static str {
        self.def.help
    }

    pub fn kind(&self) -> Kind {
        self.def.kind
    }

    /// How many series it has.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn series(&self) -> impl ExactSizeIterator<Item = Series<'_>> + '_ {
        self.slots
            .iter()
            .map(move |slot| Series { family: self, slot })
    }

    /// Adds a series with `labels` (in that order) and `value`.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: f64) {
        self.push_labels(labels.iter().copied(), value);
    }

    /// Adds a copy of a series of another family.
    pub fn push_series(&mut self, series: Series<'_>) {
        self.push_labels(series.labels(), series.value());
    }

    fn push_labels<'v>(
        &mut self,
        labels: impl Iterator<Item = (&'static str, &'v str)>,
        value: f64,
    ) {
        let first = self.labels.len();
        for (name, v) in labels {
            let start = self.text.len();
            self.text.push_str(v);
            self.labels.push(Label {
                name,
                start,
                end: self.text.len(),
            });
        }
        self.slots.push(Slot {
            first,
            end: self.labels.len(),
            value,
        });
    }

    /// Drops all but the last series of each label set: a duplicate would make the
    /// Pushgateway reject the whole push. Label sets are compared by hash first.
    pub fn dedup_keep_last(&mut self) {
        use std::hash::{Hash, Hasher};
        /// A series hashed and compared by its labels.
        struct Key<'f>(Series<'f>);
        impl Hash for Key<'_> {
            /// A series' label values lie one after another in the family's text: hashed
            /// as one slice, with their count. Equal label sets hash alike; `eq` tells
            /// apart the rest (`a="1",b=""` from `a="1b"`).
            fn hash<H: Hasher>(&self, h: &mut H) {
                let Series { family, slot } = self.0;
                let labels = &family.labels[slot.first..slot.end];
                if let (Some(a), Some(b)) = (labels.first(), labels.last()) {
                    h.write(&family.text.as_bytes()[a.start..b.end]);
                }
                h.write_usize(labels.len());
            }
        }
        impl PartialEq for Key<'_> {
            fn eq(&self, other: &Self) -> bool {
                self.0.same_labels(&other.0)
            }
        }
        impl Eq for Key<'_> {}

        let mut keep = vec![true; self.slots.len()];
        let mut seen = std::collections::HashSet::with_capacity(self.slots.len());
        // Walking from the last, a series whose labels were seen is an earlier duplicate.
        for (i, slot) in self.slots.iter().enumerate().rev() {
            keep[i] = seen.insert(Key(Series { family: self, slot }));
        }
        drop(seen);
        if keep.iter().all(|k| *k) {
            return;
        }
        let mut keep = keep.into_iter();
        self.slots.retain(|_| keep.next().unwrap_or(true));
    }
}

/// For `layout = "locale"`: the series without a `locale` label (server-wide) and, per
/// locale, that locale's series, each as families of their own.
pub fn split_by_locale(
    families: &[Family],
) -> (Vec<Family>, std::collections::BTreeMap<String, Vec<Family>>) {
    let mut server = Vec::new();
    let mut locales: std::collections::BTreeMap<String, Vec<Family>> = Default::default();
    for f in families {
        let mut global = Family::new(f.def);
        let mut per: std::collections::BTreeMap<&str, Family> = Default::default();
        for s in f.series() {
            match s.label("locale") {
                Some(l) => per
                    .entry(l)
                    .or_insert_with(|| Family::new(f.def))
                    .push_series(s),
                None => global.push_series(s),
            }
        }
        if !global.is_empty() {
            server.push(global);
        }
        for (loc, family) in per {
            locales.entry(loc.to_string()).or_default().push(family);
        }
    }
    (server, locales)
}

/// A family the text exposition cannot have: no series, or no name.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("metric family {0:?} has no series")]
    NoSeries(&'static str),
    #[error("a metric family has no name")]
    NoName,
}

/// Encodes families as Prometheus text exposition into `buf` (cleared first), with
/// `first` put first on every series (the grouping labels of scrape mode; none for a
/// Pushgateway, which adds them itself).
///
/// Byte for byte what `prometheus::TextEncoder` wrote for the same families (tested
/// against it), and what it refused (a family with no series or no name) refused:
/// integer values below 2^53 (nearly all of Arkouda's: counts, bytes) are written as
/// integers, which is what `f64`'s `Display` writes for them, without a `String` per
/// value.
pub fn encode_text(
    families: &[Family],
    first: &[(String, String)],
    buf: &mut String,
) -> Result<(), EncodeError> {
    buf.clear();
    if let Some(f) = families
        .iter()
        .find(|f| f.is_empty() || f.name().is_empty())
    {
        return Err(if f.name().is_empty() {
            EncodeError::NoName
        } else {
            EncodeError::NoSeries(f.name())
        });
    }
    // `{a="x",b="y"` once, for every series.
    let mut head = String::new();
    for (n, v) in first {
        head.push(if head.is_empty() { '{' } else { ',' });
        head.push_str(n);
        head.push_str("=\"");
        push_escaped(&mut head, v, true);
        head.push('"');
    }
    for f in families {
        let name = f.name();
        if !f.help().is_empty() {
            buf.push_str("# HELP ");
            buf.push_str(name);
            buf.push(' ');
            push_escaped(buf, f.help(), false);
            buf.push('\n');
        }
        buf.push_str("# TYPE ");
        buf.push_str(name);
        buf.push_str(match f.kind() {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        });
        for s in f.series() {
            buf.push_str(name);
            buf.push_str(&head);
            let mut sep = if head.is_empty() { '{' } else { ',' };
            for (n, v) in s.labels() {
                buf.push(sep);
                buf.push_str(n);
                buf.push_str("=\"");
                push_escaped(buf, v, true);
                buf.push('"');
                sep = ',';
            }
            if sep == ',' {
                buf.push('}');
            }
            buf.push(' ');
            push_value(buf, s.value());
            buf.push('\n');
        }
    }
    Ok(())
}

/// `v` as `f64`'s `Display` writes it.
fn push_value(buf: &mut String, v: f64) {
    // Below 2^53 every integer is a double, and its shortest round-trip form (what
    // `Display` writes) is the integer itself; -0 is written "-0", so it takes the long way.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.fract() == 0.0 && v.abs() < EXACT && (v != 0.0 || v.is_sign_positive()) {
        push_int(buf, v as i64);
    } else {
        use std::fmt::Write as _;
        let _ = write!(buf, "{v}");
    }
}

fn push_int(buf: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut u = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if n < 0 {
        buf.push('-');
    }
    if let Ok(d) = std::str::from_utf8(&digits[i..]) {
        buf.push_str(d);
    }
}

/// `v` with `\\` and newline escaped (and `"` in a label value), as the text format wants.
fn push_escaped(buf: &mut String, v: &str, quote: bool) {
    let special = |c: char| c == '\\' || c == '\n' || (quote && c == '"');
    if !v.contains(special) {
        buf.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '"' if quote => buf.push_str("\\\""),
            c => buf.push(c),
        }
    }
}

/// A [`Def`] made at run time, for tests that need names of their own (leaked: a test's
/// few bytes).
#[cfg(test)]
pub(crate) fn leak_def(name: &str, help: &str, kind: Kind) -> &'static Def {
    Box::leak(Box::new(Def {
        name: Box::leak(name.to_string().into_boxed_str()),
        kind,
        help: Box::leak(help.to_string().into_boxed_str()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    /// One series for [`family`]: labels and value.
    type TestSeries = (Vec<(String, String)>, f64);

    fn s(labels: &[(&str, &str)], v: f64) -> TestSeries {
        (
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            v,
        )
    }

    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_string().into_boxed_str())
    }

    fn family(name: &str, help: &str, counter: bool, series: &[TestSeries]) -> Family {
        let kind = if counter { Kind::Counter } else { Kind::Gauge };
        let mut f = Family::new(leak_def(name, help, kind));
        for (labels, v) in series {
            let labels: Vec<(&'static str, &str)> =
                labels.iter().map(|(k, v)| (leak(k), v.as_str())).collect();
            f.push(&labels, *v);
        }
        f
    }

    /// The same families in the `prometheus` crate's model, with `first` put first on
    /// every series.
    fn to_proto(
        families: &[Family],
        first: &[(String, String)],
    ) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
        families
            .iter()
            .map(|f| {
                let mut p = MetricFamily::default();
                p.set_name(f.name().to_string());
                p.set_help(f.help().to_string());
                p.set_field_type(match f.kind() {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                });
                p.set_metric(
                    f.series()
                        .map(|s| {
                            let pair = |k: &str, v: &str| {
                                let mut lp = LabelPair::default();
                                lp.set_name(k.to_string());
                                lp.set_value(v.to_string());
                                lp
                            };
                            let mut m = Metric::from_label(
                                first
                                    .iter()
                                    .map(|(k, v)| pair(k, v))
                                    .chain(s.labels().map(|(k, v)| pair(k, v)))
                                    .collect(),
                            );
                            match f.kind() {
                                Kind::Counter => {
                                    let mut c = Counter::default();
                                    c.set_value(s.value());
                                    m.set_counter(c);
                                }
                                Kind::Gauge => {
                                    let mut g = Gauge::default();
                                    g.set_value(s.value());
                                    m.set_gauge(g);
                                }
                            }
                            m
                        })
                        .collect(),
                );
                p
            })
            .collect()
    }

    fn reference(families: &[Family], first: &[(String, String)]) -> Result<String, String> {
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&to_proto(families, first), &mut text)
            .map(|()| text)
            .map_err(|e| e.to_string())
    }

    fn ours(families: &[Family], first: &[(String, String)]) -> Result<String, String> {
        let mut text = String::from("left over");
        encode_text(families, first, &mut text)
            .map(|()| text)
            .map_err(|e| e.to_string())
    }

    /// The values and strings where a hand-written encoder could part from the crate's.
    #[test]
    fn encoder_equals_the_prometheus_crate_on_edge_cases() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.25,
            1e-7,
            123456.789,
            4_000_256_000.0,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            9_007_199_254_740_993.0,
            -9_007_199_254_740_992.0,
            1e21,
            1.7e308,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            i64::MAX as f64,
            i64::MIN as f64,
        ];
        let series: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (vec![("l".to_string(), format!("q\"u\\o\nte {i} ü"))], *v))
            .collect();
        let grouping = [
            ("job".to_string(), "arkouda".to_string()),
            ("site".to_string(), "a\"b\\c\nd".to_string()),
        ];
        for counter in [false, true] {
            let fams = [
                family(
                    "a_total",
                    "help \\ with\nnewline \" quote",
                    counter,
                    &series,
                ),
                family("b", "", counter, &[(Vec::new(), 3.0)]),
            ];
            for first in [&[][..], &grouping[..1], &grouping[..]] {
                assert_eq!(ours(&fams, first), reference(&fams, first));
            }
        }
        // What the crate refuses (a family with no series, or no name), refused too.
        for refused in [
            [family("c", "h", false, &[])],
            [family("", "h", false, &[(Vec::new(), 1.0)])],
        ] {
            assert!(reference(&refused, &[]).is_err());
            assert!(ours(&refused, &[]).is_err());
        }
    }

    proptest::proptest! {
        /// Any gauges and counters, with any labels put first: byte for byte the crate's
        /// text.
        #[test]
        fn encoder_equals_the_prometheus_crate(
            fams in proptest::collection::vec(
                (
                    "[a-z_]{1,8}",
                    proptest::prelude::any::<String>(),
                    proptest::prelude::any::<bool>(),
                    proptest::collection::vec(
                        (
                            proptest::collection::vec(("[a-z]{1,4}", proptest::prelude::any::<String>()), 0..3),
                            proptest::prop_oneof![
                                proptest::prelude::any::<f64>(),
                                (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|i| i as f64),
                            ],
                        ),
                        1..4,
                    ),
                ),
                0..4,
            ),
            first in proptest::collection::vec(("[a-z]{1,4}", proptest::prelude::any::<String>()), 0..3),
        ) {
            let fams: Vec<Family> = fams
                .iter()
                .map(|(n, h, c, s)| family(n, h, *c, s))
                .collect();
            proptest::prop_assert_eq!(ours(&fams, &first), reference(&fams, &first));
        }
    }

    /// The last series of each label set is kept, in its place among the others; a
    /// label set is its names and values in order.
    #[test]
    fn dedup_keeps_the_last_of_each_label_set() {
        let mut f = family(
            "x",
            "",
            false,
            &[
                s(&[("a", "1")], 1.0),
                s(&[("a", "2")], 2.0),
                s(&[("a", "1")], 3.0),
                s(&[], 4.0),
                s(&[("a", "1"), ("b", "")], 5.0),
                s(&[("b", ""), ("a", "1")], 6.0),
                s(&[("a", "")], 7.0),
                s(&[], 8.0),
                // Not the same as a="1" with b="": the values are not run together.
                s(&[("a", "1b")], 9.0),
            ],
        );
        f.dedup_keep_last();
        let got: Vec<String> = f.series().map(|s| format!("{s:?}")).collect();
        assert_eq!(
            got,
            vec![
                r#"{"a": "2"} 2"#,
                r#"{"a": "1"} 3"#,
                r#"{"a": "1", "b": ""} 5"#,
                r#"{"b": "", "a": "1"} 6"#,
                r#"{"a": ""} 7"#,
                "{} 8",
                r#"{"a": "1b"} 9"#,
            ]
        );
    }

    /// Per locale: each locale's series in families of their own, the rest server-wide.
    #[test]
    fn split_by_locale_keeps_order_and_values() {
        let fams = [
            family(
                "info",
                "h",
                false,
                &[
                    s(&[("locale", "1"), ("locale_name", "n1")], 1.0),
                    s(&[("locale", "0"), ("locale_name", "n0")], 1.0),
                ],
            ),
            family("up", "h", false, &[s(&[], 1.0)]),
            family(
                "mem",
                "h",
                false,
                &[s(&[("locale", "0")], 5.0), s(&[("command", "x")], 6.0)],
            ),
        ];
        let (server, locales) = split_by_locale(&fams);
        let text = |f: &[Family]| ours(f, &[]).unwrap();
        assert_eq!(
            text(&server),
            "# HELP up h\n# TYPE up gauge\nup 1\n# HELP mem h\n# TYPE mem gauge\nmem{command=\"x\"} 6\n"
        );
        assert_eq!(locales.keys().collect::<Vec<_>>(), ["0", "1"]);
        assert_eq!(
            text(&locales["0"]),
            "# HELP info h\n# TYPE info gauge\ninfo{locale=\"0\",locale_name=\"n0\"} 1\n# HELP mem h\n# TYPE mem gauge\nmem{locale=\"0\"} 5\n"
        );
        assert_eq!(
            text(&locales["1"]),
            "# HELP info h\n# TYPE info gauge\ninfo{locale=\"1\",locale_name=\"n1\"} 1\n"
        );
    }
}
