//! Fault modes of the metrics port (`--fault`, `--control`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Hold the reply while the mode stays `hang`.
    Hang,
    /// Answer N `metrics` requests, then die silently for good.
    DieAfter(u64),
    /// Reply with bytes that are not JSON (nor UTF-8).
    Garbage,
    /// The valid reply cut in half.
    Truncated,
    /// msgType ERROR, msg "Error: simulated failure".
    Error,
    /// Sleep MS milliseconds, then reply normally.
    Slow(u64),
    /// A valid reply padded by an extra field to at least BYTES bytes.
    Oversized(usize),
    /// ALL also carries an unknown category, an unknown scope and an
    /// unknown field.
    UnknownCategories,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (head, arg) = match s.split_once(':') {
            Some((h, a)) => (h.trim(), Some(a.trim())),
            None => (s, None),
        };
        let num = |what: &str| -> Result<u64, String> {
            arg.ok_or_else(|| format!("fault {head} needs a number ({what})"))?
                .parse::<u64>()
                .map_err(|e| format!("fault {s:?}: bad number: {e}"))
        };
        match (head, arg) {
            ("none", None) => Ok(Fault::None),
            ("hang", None) => Ok(Fault::Hang),
            ("die-after", _) => Ok(Fault::DieAfter(num("N")?)),
            ("garbage", None) => Ok(Fault::Garbage),
            ("truncated", None) => Ok(Fault::Truncated),
            ("error", None) => Ok(Fault::Error),
            ("slow", _) => Ok(Fault::Slow(num("MS")?)),
            ("oversized", _) => {
                let n = num("BYTES")?;
                usize::try_from(n)
                    .map(Fault::Oversized)
                    .map_err(|e| format!("fault {s:?}: {e}"))
            }
            ("unknown-categories", None) => Ok(Fault::UnknownCategories),
            _ => Err(format!(
                "unknown fault mode {s:?} (none, hang, die-after:N, garbage, truncated, error, slow:MS, oversized:BYTES, unknown-categories)"
            )),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => write!(f, "none"),
            Fault::Hang => write!(f, "hang"),
            Fault::DieAfter(n) => write!(f, "die-after:{n}"),
            Fault::Garbage => write!(f, "garbage"),
            Fault::Truncated => write!(f, "truncated"),
            Fault::Error => write!(f, "error"),
            Fault::Slow(ms) => write!(f, "slow:{ms}"),
            Fault::Oversized(n) => write!(f, "oversized:{n}"),
            Fault::UnknownCategories => write!(f, "unknown-categories"),
        }
    }
}

/// Where the current fault mode comes from.
#[derive(Debug, Clone)]
pub struct FaultSource {
    pub initial: Fault,
    pub control: Option<PathBuf>,
}

impl FaultSource {
    /// The mode in force right now: the control file's trimmed content when
    /// that file exists (an unparsable content counts as `none`), else
    /// `--fault`.
    pub fn current(&self) -> Fault {
        let Some(path) = &self.control else {
            return self.initial.clone();
        };
        match std::fs::read_to_string(path) {
            Ok(text) => match text.trim().parse::<Fault>() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!(
                        "arkouda-sim: control file {}: {e}; using none",
                        path.display()
                    );
                    Fault::None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.initial.clone(),
            Err(e) => {
                eprintln!(
                    "arkouda-sim: cannot read control file {}: {e}; using --fault",
                    path.display()
                );
                self.initial.clone()
            }
        }
    }
}

/// The garbage reply.
pub const GARBAGE: &[u8] = b"\xff\xfe\x00<<arkouda-sim garbage>> this is not JSON {\"msg\":";

/// Pad a reply frame (a JSON object) with an extra field so that it is at
/// least `min_len` bytes long.
pub fn oversize(frame: &str, min_len: usize) -> String {
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let field = ", \"padding\":\"";
    let fixed = body.len() + field.len() + 2;
    let pad = min_len.saturating_sub(fixed);
    let mut s = String::with_capacity(fixed + pad);
    s.push_str(body);
    s.push_str(field);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_modes() {
        assert_eq!("none".parse(), Ok(Fault::None));
        assert_eq!(" hang\n".parse(), Ok(Fault::Hang));
        assert_eq!("die-after:3".parse(), Ok(Fault::DieAfter(3)));
        assert_eq!("slow:250".parse(), Ok(Fault::Slow(250)));
        assert_eq!("oversized:1048576".parse(), Ok(Fault::Oversized(1_048_576)));
        assert_eq!("unknown-categories".parse(), Ok(Fault::UnknownCategories));
        assert!("die-after".parse::<Fault>().is_err());
        assert!("slow:x".parse::<Fault>().is_err());
        assert!("bogus".parse::<Fault>().is_err());
        for f in [
            "none",
            "hang",
            "die-after:2",
            "garbage",
            "truncated",
            "error",
            "slow:5",
            "oversized:9",
            "unknown-categories",
        ] {
            assert_eq!(f.parse::<Fault>().map(|x| x.to_string()), Ok(f.to_string()));
        }
    }

    #[test]
    fn oversize_is_valid_json() {
        let frame = r#"{"msg":"", "msgType":"NORMAL", "msgFormat":"STRING", "user":""}"#;
        let big = oversize(frame, 10_000);
        assert!(big.len() >= 10_000);
        let v: serde_json::Value = serde_json::from_str(&big).unwrap();
        assert_eq!(v["msgType"], "NORMAL");
        let small = oversize(frame, 0);
        assert!(serde_json::from_str::<serde_json::Value>(&small).is_ok());
        assert!(serde_json::from_slice::<serde_json::Value>(GARBAGE).is_err());
    }

    #[test]
    fn control_file_overrides() {
        let dir = std::env::temp_dir().join(format!("arkouda-sim-fault-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("control");
        let _ = std::fs::remove_file(&path);
        let src = FaultSource {
            initial: Fault::Slow(1),
            control: Some(path.clone()),
        };
        assert_eq!(src.current(), Fault::Slow(1));
        std::fs::write(&path, "hang\n").unwrap();
        assert_eq!(src.current(), Fault::Hang);
        std::fs::write(&path, "what").unwrap();
        assert_eq!(src.current(), Fault::None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
