//! Slurm's hostlist syntax (`nid[001-004,007]`, `a[1-2]b,c`, `rack[1-2]-n[01-02]`), parsed
//! and expanded here so the hooks can find a job's first node without calling `scontrol`
//! (which retries for a minute when slurmctld is unreachable).
//!
//! Zero padding is kept: a range's width is the width of its lower bound as written
//! (`[001-010]` gives `001` … `010`), as in Slurm's own hostlist.c. Order is kept as written;
//! with several bracket groups in one name the first group varies slowest.
//!
//! This module is pure text processing: it never resolves names or runs anything.

/// Largest number of names [`expand`] produces; a hostlist naming more is refused rather
/// than allocated (a typo such as `n[0-999999999]` must not exhaust memory in a Prolog).
pub const MAX_HOSTS: u128 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    #[error("empty hostlist")]
    Empty,
    #[error("unbalanced brackets in hostlist entry `{0}`")]
    Brackets(String),
    #[error("bad range `{range}` in hostlist entry `{entry}`: {reason}")]
    Range {
        range: String,
        entry: String,
        reason: &'static str,
    },
    #[error("hostlist names more than {MAX_HOSTS} hosts")]
    TooMany,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

impl Range {
    fn len(&self) -> u128 {
        u128::from(self.hi - self.lo) + 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Ranges(Vec<Range>),
}

/// One top-level entry of a hostlist, such as `nid[001-004,007]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    parts: Vec<Part>,
}

impl Pattern {
    fn count(&self) -> u128 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(_) => 1,
                Part::Ranges(rs) => rs.iter().map(Range::len).sum(),
            })
            .fold(1u128, |acc, n| acc.saturating_mul(n))
    }

    fn first(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                // A parsed bracket group always holds at least one range.
                Part::Ranges(rs) => {
                    if let Some(r) = rs.first() {
                        out.push_str(&pad(r.lo, r.width));
                    }
                }
            }
        }
        out
    }

    fn expand_into(&self, out: &mut Vec<String>) {
        let mut names = vec![String::new()];
        for p in &self.parts {
            match p {
                Part::Literal(s) => names.iter_mut().for_each(|n| n.push_str(s)),
                Part::Ranges(rs) => {
                    let mut next = Vec::new();
                    for prefix in &names {
                        for r in rs {
                            for i in r.lo..=r.hi {
                                next.push(format!("{prefix}{}", pad(i, r.width)));
                            }
                        }
                    }
                    names = next;
                }
            }
        }
        out.extend(names);
    }
}

fn pad(n: u64, width: usize) -> String {
    format!("{n:0width$}")
}

/// Splits at commas outside brackets.
fn split_top(list: &str) -> Result<Vec<&str>, HostlistError> {
    let mut entries = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| HostlistError::Brackets(list.to_string()))?
            }
            ',' if depth == 0 => {
                entries.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostlistError::Brackets(list.to_string()));
    }
    entries.push(&list[start..]);
    Ok(entries
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect())
}

fn parse_range(text: &str, entry: &str) -> Result<Range, HostlistError> {
    let bad = |reason| HostlistError::Range {
        range: text.to_string(),
        entry: entry.to_string(),
        reason,
    };
    let text = text.trim();
    let (lo_s, hi_s) = text.split_once('-').unwrap_or((text, text));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(lo_s) || !digits(hi_s) {
        return Err(bad("expected N or N-M with decimal numbers"));
    }
    let lo: u64 = lo_s.parse().map_err(|_| bad("number too large"))?;
    let hi: u64 = hi_s.parse().map_err(|_| bad("number too large"))?;
    if hi < lo {
        return Err(bad("the range ends before it starts"));
    }
    Ok(Range {
        lo,
        hi,
        width: lo_s.len(),
    })
}

fn parse_entry(entry: &str) -> Result<Pattern, HostlistError> {
    let mut parts = Vec::new();
    let mut rest = entry;
    while !rest.is_empty() {
        match rest.find('[') {
            None => {
                if rest.contains(']') {
                    return Err(HostlistError::Brackets(entry.to_string()));
                }
                parts.push(Part::Literal(rest.to_string()));
                rest = "";
            }
            Some(open) => {
                let close = rest[open..]
                    .find(']')
                    .map(|c| open + c)
                    .ok_or_else(|| HostlistError::Brackets(entry.to_string()))?;
                let literal = &rest[..open];
                let inner = &rest[open + 1..close];
                if literal.contains(']') || inner.contains('[') {
                    return Err(HostlistError::Brackets(entry.to_string()));
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(literal.to_string()));
                }
                let ranges = inner
                    .split(',')
                    .map(|r| parse_range(r, entry))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(Part::Ranges(ranges));
                rest = &rest[close + 1..];
            }
        }
    }
    Ok(Pattern { parts })
}

fn parse(list: &str) -> Result<Vec<Pattern>, HostlistError> {
    let patterns = split_top(list)?
        .into_iter()
        .map(parse_entry)
        .collect::<Result<Vec<_>, _>>()?;
    if patterns.is_empty() {
        return Err(HostlistError::Empty);
    }
    Ok(patterns)
}

/// The first host of a hostlist, without expanding the rest (the whole list is still
/// checked for syntax, so a corrupt list is reported rather than half-used).
pub fn first(list: &str) -> Result<String, HostlistError> {
    let patterns = parse(list)?;
    // parse() refuses an empty list, so there is a first pattern.
    patterns
        .first()
        .map(Pattern::first)
        .ok_or(HostlistError::Empty)
}

/// Every host of a hostlist, in order (duplicates kept, as Slurm keeps them).
pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    let patterns = parse(list)?;
    let total = patterns
        .iter()
        .map(Pattern::count)
        .fold(0u128, u128::saturating_add);
    if total > MAX_HOSTS {
        return Err(HostlistError::TooMany);
    }
    let mut out = Vec::new();
    for p in &patterns {
        p.expand_into(&mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_table() {
        let cases: &[(&str, &[&str])] = &[
            ("vm", &["vm"]),
            ("nid001", &["nid001"]),
            (
                "nid[001-004,007]",
                &["nid001", "nid002", "nid003", "nid004", "nid007"],
            ),
            ("a[1-2]b,c", &["a1b", "a2b", "c"]),
            ("n[8-11]", &["n8", "n9", "n10", "n11"]),
            ("n[08-11]", &["n08", "n09", "n10", "n11"]),
            ("n[098-101]", &["n098", "n099", "n100", "n101"]),
            ("n[5]", &["n5"]),
            ("[1-3]", &["1", "2", "3"]),
            ("x[0007]", &["x0007"]),
            ("r[1-2]-n[01-02]", &["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
            ("a,b, c", &["a", "b", "c"]),
            ("n[3,1]", &["n3", "n1"]),
            ("gpu-a[1-2].ib,login", &["gpu-a1.ib", "gpu-a2.ib", "login"]),
            ("n[1-2],n[1-2]", &["n1", "n2", "n1", "n2"]),
            ("a,,b", &["a", "b"]),
        ];
        for (list, want) in cases {
            assert_eq!(expand(list).unwrap(), *want, "{list}");
            assert_eq!(first(list).unwrap(), want[0], "first of {list}");
        }
    }

    #[test]
    fn errors_table() {
        let cases: &[(&str, &str)] = &[
            ("", "empty hostlist"),
            (" , ", "empty hostlist"),
            ("n[1-2", "unbalanced brackets in hostlist entry `n[1-2`"),
            ("n1-2]", "unbalanced brackets in hostlist entry `n1-2]`"),
            ("n[[1]]", "unbalanced brackets"),
            (
                "n[2-1]",
                "bad range `2-1` in hostlist entry `n[2-1]`: the range ends before it starts",
            ),
            ("n[a-b]", "bad range `a-b`"),
            ("n[]", "bad range ``"),
            ("n[1-]", "bad range `1-`"),
            ("n[1,,2]", "bad range ``"),
            ("n[99999999999999999999]", "number too large"),
        ];
        for (list, want) in cases {
            let err = expand(list).unwrap_err().to_string();
            assert!(err.contains(want), "{list:?}: {err}");
            assert!(first(list).is_err(), "first({list:?}) must fail too");
        }
    }

    #[test]
    fn huge_lists_are_refused_but_first_still_works() {
        let list = "n[0-999999999]";
        assert_eq!(expand(list).unwrap_err(), HostlistError::TooMany);
        assert_eq!(first(list).unwrap(), "n0");
        assert_eq!(first("a[0-9999][0-9999][0-9999]").unwrap(), "a000");
    }
}
