//! Chapel-style JSON text: `%er` reals, naive timestamps, escaped strings and
//! the reply wrapper (`ReplyMsg` / `MsgTuple`), written by hand so that the
//! byte layout matches the real server (`"k":v` joined by `", "`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::release::Release;

/// Format a real like C's `%.6e` (which Chapel's `%er` uses): six fraction
/// digits, exponent signed and at least two digits (`1.000000e+00`).
pub fn real(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let s = format!("{v:.6e}");
    let Some((mant, exp)) = s.split_once('e') else {
        return s;
    };
    let exp: i32 = match exp.parse() {
        Ok(e) => e,
        Err(_) => return s,
    };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.unsigned_abs())
}

/// Escape `s` as a JSON string literal, quotes included. Non-ASCII text is
/// written as UTF-8; control characters are escaped.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_string(&mut out, s);
    out
}

/// Append `s` as a JSON string literal to `out`.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Chapel `dateTime` text for a UTC instant: `YYYY-MM-DDThh:mm:ss.ffffff`,
/// with the fraction omitted when the microseconds are zero.
pub fn timestamp(unix_secs: i64, micros: u32) -> String {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    if micros == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{micros:06}")
    }
}

/// `dateTime.now()` (UTC here; the real server uses its local zone).
pub fn now_timestamp() -> String {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => timestamp(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_micros(),
        ),
        Err(e) => {
            // Clock before 1970: count backwards.
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(0);
            let micros = d.subsec_micros();
            if micros == 0 {
                timestamp(secs, 0)
            } else {
                timestamp(secs - 1, 1_000_000 - micros)
            }
        }
    }
}

/// Which daemon is replying (the reply's `user` field depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Metrics,
    Main,
}

impl Port {
    pub fn label(self) -> &'static str {
        match self {
            Port::Metrics => "metrics",
            Port::Main => "main",
        }
    }
}

/// The whole reply frame.
///
/// * ≤ v2024.04.19 (`ReplyMsg`): `{"msg":…, "msgType":…, "msgFormat":"STRING", "user":<request user>}`
/// * ≥ v2024.10.02 (`MsgTuple`): adds `"payload":""`; the metrics daemon's
///   helper drops the user (`"user":""`), the main daemon fills it in.
pub fn reply_frame(release: Release, port: Port, msg: &str, msg_type: &str, user: &str) -> String {
    let mut out = String::with_capacity(msg.len() + msg.len() / 8 + 96);
    out.push_str("{\"msg\":");
    push_string(&mut out, msg);
    out.push_str(", \"msgType\":");
    push_string(&mut out, msg_type);
    out.push_str(", \"msgFormat\":\"STRING\", \"user\":");
    if release.legacy_reply() {
        push_string(&mut out, user);
        out.push('}');
    } else {
        let shown = match port {
            Port::Metrics => "",
            Port::Main => user,
        };
        push_string(&mut out, shown);
        out.push_str(", \"payload\":\"\"}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reals_like_c() {
        assert_eq!(real(0.0), "0.000000e+00");
        assert_eq!(real(1.0), "1.000000e+00");
        assert_eq!(real(9.0), "9.000000e+00");
        assert_eq!(real(0.2961221), "2.961221e-01");
        assert_eq!(real(8.000512e8), "8.000512e+08");
        assert_eq!(real(274_877_906_944.0), "2.748779e+11");
        assert_eq!(real(1e-5), "1.000000e-05");
        assert_eq!(real(1.5e100), "1.500000e+100");
        assert_eq!(real(-0.001), "-1.000000e-03");
        assert_eq!(real(0.1234567), "1.234567e-01");
        // Values parse back as JSON numbers.
        let v: f64 = serde_json::from_str(&real(2.961221e-1)).unwrap();
        assert!((v - 0.2961221).abs() < 1e-12);
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0, 0), "1970-01-01T00:00:00");
        assert_eq!(
            timestamp(1_714_658_591, 512_345),
            "2024-05-02T14:03:11.512345"
        );
        assert_eq!(timestamp(1_714_658_591, 0), "2024-05-02T14:03:11");
        assert_eq!(timestamp(1_714_658_591, 7), "2024-05-02T14:03:11.000007");
        assert_eq!(timestamp(1_709_164_800, 1), "2024-02-29T00:00:00.000001");
        assert_eq!(timestamp(951_868_799, 0), "2000-02-29T23:59:59");
        assert_eq!(timestamp(-1, 0), "1969-12-31T23:59:59");
        assert_eq!(timestamp(4_102_444_800, 0), "2100-01-01T00:00:00");
        let now = now_timestamp();
        assert!(now.len() == 19 || now.len() == 26, "{now}");
        assert_eq!(&now[10..11], "T");
    }

    #[test]
    fn strings_escape() {
        assert_eq!(string("a/b"), r#""a/b""#);
        assert_eq!(string("q\"uote"), r#""q\"uote""#);
        assert_eq!(string("back\\slash"), r#""back\\slash""#);
        assert_eq!(string("new\nline"), r#""new\nline""#);
        assert_eq!(string("ünï code"), "\"ünï code\"");
        assert_eq!(string("\u{1}"), r#""\u0001""#);
        for s in [
            "a/b",
            "q\"uote",
            "back\\slash",
            "new\nline",
            "ünï code",
            "",
            "\u{7f}\t",
        ] {
            let back: String = serde_json::from_str(&string(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn reply_shapes() {
        for r in Release::ALL {
            let m = reply_frame(r, Port::Metrics, "x\"y", "NORMAL", "alice");
            let main = reply_frame(r, Port::Main, "imok", "NORMAL", "alice");
            if r <= Release::V2024_04_19 {
                assert_eq!(
                    m,
                    r#"{"msg":"x\"y", "msgType":"NORMAL", "msgFormat":"STRING", "user":"alice"}"#
                );
                assert_eq!(
                    main,
                    r#"{"msg":"imok", "msgType":"NORMAL", "msgFormat":"STRING", "user":"alice"}"#
                );
            } else {
                assert_eq!(
                    m,
                    r#"{"msg":"x\"y", "msgType":"NORMAL", "msgFormat":"STRING", "user":"", "payload":""}"#
                );
                assert_eq!(
                    main,
                    r#"{"msg":"imok", "msgType":"NORMAL", "msgFormat":"STRING", "user":"alice", "payload":""}"#
                );
            }
            let v: serde_json::Value = serde_json::from_str(&m).unwrap();
            assert_eq!(v["msg"], "x\"y");
        }
    }
}
