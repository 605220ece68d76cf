//! The Arkouda wire format: request JSON, reply JSON, metric records, SERVER_INFO,
//! `getconfig` and the connection-info file, for every release since metrics appeared
//! (v2022.08.15). Pure functions over strings and bytes: no sockets here.
//!
//! Release differences are absorbed here and nowhere else: bare-string `args` before
//! v2022.09.30, `objType` in parameters from v2022.09.30 to v2024.06.21, replies with or
//! without `payload`. Anything unknown in a reply (a category, a scope, a field) is counted
//! and skipped, never an error: the old exporter died on the first new category.

use std::fmt;

use std::borrow::Cow;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An Arkouda release, as the `YYYY.MM.DD` date of its tag and, for the four-part tags
/// of a fix release (`v2026.02.02.1`), its number after the date (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub fix: u16,
}

impl Release {
    /// The first release whose `metrics` takes JSON parameters.
    pub const JSON_ARGS: Release = Release::new(2022, 9, 30);
    /// The first release without `objType` in parameters.
    pub const NO_OBJTYPE: Release = Release::new(2024, 10, 2);

    pub const fn new(year: u16, month: u8, day: u8) -> Self {
        Release {
            year,
            month,
            day,
            fix: 0,
        }
    }

    /// Parses `v2024.10.02`, `2024.10.02`, four-part fix tags (`v2026.02.02.1`) and
    /// development versions such as `v2022.07.28+42.g3e299b22.dirty` (which count as their
    /// base release).
    pub fn parse(s: &str) -> Option<Release> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let base = s.split(['+', '-', ' ']).next()?;
        let mut parts = base.split('.');
        let year: u16 = parts.next()?.parse().ok()?;
        let month: u8 = parts.next()?.parse().ok()?;
        let day: u8 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
        let fix: u16 = parts.next().map_or(Some(0), |f| f.parse().ok())?;
        if parts.next().is_some()
            || !(2019..=2999).contains(&year)
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
        {
            return None;
        }
        Some(Release {
            year,
            month,
            day,
            fix,
        })
    }

    /// How this release wants `metrics` arguments.
    pub fn arg_style(self) -> ArgStyle {
        if self < Release::JSON_ARGS {
            ArgStyle::Bare
        } else if self < Release::NO_OBJTYPE {
            ArgStyle::JsonWithObjType
        } else {
            ArgStyle::Json
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{:04}.{:02}.{:02}", self.year, self.month, self.day)?;
        if self.fix > 0 {
            write!(f, ".{}", self.fix)?;
        }
        Ok(())
    }
}

/// The shape of a request's `args`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgStyle {
    /// v2022.08.x: `args` is the bare category name, `size` is -1 (the request record
    /// declares `size` in every release, and the client of that era always sends -1).
    Bare,
    /// v2022.09.30 – v2024.06.21: JSON parameter objects with `objType`.
    JsonWithObjType,
    /// v2024.10.02 on: JSON parameter objects without `objType`.
    Json,
}

#[derive(Serialize)]
struct Request<'a> {
    user: &'a str,
    token: &'a str,
    cmd: &'a str,
    format: &'a str,
    args: &'a str,
    /// Declared by the server's request record in every release: a request without it
    /// ends the metrics daemon for good (docs/arkouda-protocol.md).
    size: i64,
}

/// A parameter, its keys in the order the Python client of each era writes them.
#[derive(Serialize)]
struct Param<'a> {
    key: &'a str,
    #[serde(rename = "objType", skip_serializing_if = "Option::is_none")]
    obj_type: Option<&'a str>,
    dtype: &'a str,
    val: &'a str,
}

/// JSON as Python's `json.dumps` writes it by default: `", "` and `": "` between items,
/// every non-ASCII character as a `\uXXXX` escape. The server reads compact JSON as well;
/// writing the real client's bytes exactly leaves nothing to chance
/// (tests/fixtures/arkouda-frames holds the real client's frames of each era).
struct PythonJson;

/// Python's item separator, before every item but the first.
fn item_separator<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(w, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

fn python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonJson);
    // Serializing these plain structs of strings cannot fail.
    if value.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

/// The request frame for `cmd`, with an optional `category` parameter, byte for byte as
/// the real Python client of `style`'s era sends it. Without a parameter: `args` "" and
/// `size` -1, as every client sends `connect` (and `getconfig` up to v2022.10).
pub fn request(
    user: &str,
    token: &str,
    cmd: &str,
    category: Option<&str>,
    style: ArgStyle,
) -> Vec<u8> {
    let (args, size) = match (category, style) {
        (None, _) => (String::new(), -1),
        (Some(c), ArgStyle::Bare) => (c.to_string(), -1),
        (Some(c), style) => {
            let param = Param {
                key: "category",
                obj_type: (style == ArgStyle::JsonWithObjType).then_some("VALUE"),
                dtype: "str",
                val: c,
            };
            // args is a JSON array of JSON-encoded strings, as the Python client sends it.
            let inner = String::from_utf8(python_json(&param)).unwrap_or_default();
            let list = String::from_utf8(python_json(&[inner])).unwrap_or_default();
            (list, 1)
        }
    };
    python_json(&Request {
        user,
        token,
        cmd,
        format: "STRING",
        args: &args,
        size,
    })
}

/// What is wrong with a reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error("reply is not JSON: {0}")]
    NotJson(String),
    #[error("reply lacks the `{0}` field")]
    MissingField(&'static str),
    #[error("server answered with an error: {0}")]
    ServerError(String),
    #[error("metrics payload is not a JSON array of records: {0}")]
    BadRecords(String),
    #[error("SERVER_INFO payload is not a server description: {0}")]
    BadServerInfo(String),
    #[error("the metrics server answered with an empty message (it does not know `{0}`)")]
    Empty(String),
}

/// A decoded reply frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub msg: String,
    pub warning: bool,
}

/// Decodes a reply frame of any release (with or without `payload`); `ERROR` replies are errors.
///
/// The `msg` of a `metrics ALL` reply is itself JSON, escaped inside a JSON string (~2 MB at
/// 4096 locales, a backslash every few bytes), which serde_json reads (or skips) escape by
/// escape: that was the largest single cost of a large cycle. So [`fast_reply`] finds the
/// top-level `msg` string and unescapes it in one pass, and leaves the rest of the frame
/// (small) to serde_json. Anything it does not take goes the general way,
/// [`parse_reply_value`], with the same result or error.
pub fn parse_reply(frame: &[u8]) -> Result<Reply, ProtocolError> {
    fast_reply(frame).unwrap_or_else(|| parse_reply_value(frame))
}

/// [`parse_reply`] for a frame whose top level has exactly one key spelled `"msg"` with a
/// string value, and no key with an escape; None for any other frame.
///
/// The string is checked as it is unescaped (no control character, well-formed escapes,
/// UTF-8) and the frame without it (`"msg": ""`) by serde_json: together, exactly what
/// reading the whole frame checks.
fn fast_reply(frame: &[u8]) -> Option<Result<Reply, ProtocolError>> {
    let (start, mut msg, end) = top_level_msg(frame)?;
    let mut rest = Vec::with_capacity(frame.len() - (end - start));
    rest.extend_from_slice(&frame[..start]);
    rest.extend_from_slice(&frame[end..]);
    let v: Value = serde_json::from_slice(&rest).ok()?;
    if !v.get("msg")?.as_str()?.is_empty() {
        return None;
    }
    let msg_type = v.get("msgType")?.as_str()?;
    if msg_type == "ERROR" {
        crate::text::truncate_chars(&mut msg, 200);
        return Some(Err(ProtocolError::ServerError(msg)));
    }
    Some(Ok(Reply {
        msg,
        warning: msg_type == "WARNING",
    }))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string that opens at `b[i]`.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// The end of the value that starts at `b[i]` (not checked: serde_json checks it).
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The top-level `msg` string of a frame: where its body starts, its text, where its
/// closing quote is. None unless the frame is an object with exactly one key spelled
/// `"msg"`, whose value is a string that unescapes cleanly, and no key with an escape.
fn top_level_msg(b: &[u8]) -> Option<(usize, String, usize)> {
    let mut i = skip_ws(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    let mut found = None;
    loop {
        i = skip_ws(b, i);
        match *b.get(i)? {
            b'}' if found.is_none() => return None,
            b'}' => break,
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(b, i)?;
        let key = &b[i + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        i = skip_ws(b, key_end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = skip_ws(b, i + 1);
        if key == b"msg" {
            if found.is_some() || *b.get(i)? != b'"' {
                return None;
            }
            let (text, close) = unescape(b, i + 1)?;
            found = Some((i + 1, text, close));
            i = close + 1;
        } else {
            i = skip_value(b, i)?;
        }
        i = skip_ws(b, i);
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    found
}

/// Unescapes the JSON string body that starts at `b[start]`, up to its closing quote:
/// the text and the index of that quote. None for what it leaves to serde_json: a control
/// character, a malformed escape, a `\\u` escape of a surrogate, invalid UTF-8.
fn unescape(b: &[u8], start: usize) -> Option<(String, usize)> {
    let mut out: Vec<u8> = Vec::with_capacity(b.len() - start);
    let mut i = start;
    loop {
        let from = i;
        while let Some(&c) = b.get(i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            i += 1;
        }
        out.extend_from_slice(&b[from..i]);
        match *b.get(i)? {
            b'"' => return Some((String::from_utf8(out).ok()?, i)),
            b'\\' => {}
            _ => return None,
        }
        let c = match *b.get(i + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hex = b.get(i + 2..i + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                let ch = char::from_u32(code)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += 6;
                continue;
            }
            _ => return None,
        };
        out.push(c);
        i += 2;
    }
}

/// [`parse_reply`] through a `serde_json::Value` tree: any frame at all.
fn parse_reply_value(frame: &[u8]) -> Result<Reply, ProtocolError> {
    let v: Value = serde_json::from_slice(frame).map_err(|e| {
        let start = String::from_utf8_lossy(&frame[..frame.len().min(40)]).into_owned();
        ProtocolError::NotJson(format!("{e}; starts with {start:?}"))
    })?;
    let msg = v
        .get("msg")
        .and_then(Value::as_str)
        .ok_or(ProtocolError::MissingField("msg"))?;
    let msg_type = v
        .get("msgType")
        .and_then(Value::as_str)
        .ok_or(ProtocolError::MissingField("msgType"))?;
    if msg_type == "ERROR" {
        let mut m = msg.to_string();
        crate::text::truncate_chars(&mut m, 200);
        return Err(ProtocolError::ServerError(m));
    }
    Ok(Reply {
        msg: msg.to_string(),
        warning: msg_type == "WARNING",
    })
}

/// Metric categories (`MetricCategory`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    NumRequests,
    ResponseTime,
    AvgResponseTime,
    TotalResponseTime,
    TotalMemoryUsed,
    System,
    Server,
    NumErrors,
    Unknown(String),
}

impl Category {
    fn parse(s: &str) -> Category {
        match s.strip_prefix("MetricCategory.").unwrap_or(s) {
            "NUM_REQUESTS" => Category::NumRequests,
            "RESPONSE_TIME" => Category::ResponseTime,
            "AVG_RESPONSE_TIME" => Category::AvgResponseTime,
            "TOTAL_RESPONSE_TIME" => Category::TotalResponseTime,
            "TOTAL_MEMORY_USED" => Category::TotalMemoryUsed,
            "SYSTEM" => Category::System,
            "SERVER" => Category::Server,
            "NUM_ERRORS" => Category::NumErrors,
            other => Category::Unknown(other.to_string()),
        }
    }
}

/// Metric scopes (`MetricScope`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Locale(LocaleRef),
    User(String),
    Request,
}

/// The locale a LOCALE-scoped record describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocaleRef {
    pub num: String,
    pub name: String,
    pub hostname: String,
}

/// One metric record. Its naive, server-local `timestamp` is not kept: the Pushgateway
/// rejects pushed timestamps and the zone is unknown.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub name: String,
    pub category: Category,
    pub scope: Scope,
    pub value: f64,
}

/// The records of a metrics reply and what was skipped on the way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    pub records: Vec<Record>,
    /// Records dropped because their category or scope is unknown or a field is missing.
    pub skipped: u64,
    /// Fields nobody knows of, seen on otherwise good records (they are ignored).
    pub unknown_fields: u64,
    /// Distinct names of what was unknown, for one log line each.
    pub unknown_names: Vec<String>,
}

/// Parses the `msg` of a `metrics` reply: a JSON array of flat record objects.
///
/// Streams the array into [`Item`]s that borrow from `msg` (no JSON tree is built: a
/// 4096-locale reply has ~8000 records, parsed every interval on a node that belongs to
/// the user's job).
pub fn parse_records(msg: &str) -> Result<Records, ProtocolError> {
    let mut de = serde_json::Deserializer::from_str(msg);
    let out = de
        .deserialize_seq(RecordsVisitor)
        .and_then(|out| de.end().map(|()| out))
        .map_err(|e| ProtocolError::BadRecords(e.to_string()))?;
    Ok(out)
}

/// Turns each array element into a record as it is read, so no element is kept.
struct RecordsVisitor;

impl<'de> Visitor<'de> for RecordsVisitor {
    type Value = Records;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of metric records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Records, A::Error> {
        let mut out = Records {
            records: Vec::with_capacity(seq.size_hint().unwrap_or(64)),
            ..Records::default()
        };
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            match record_of(item) {
                Ok((r, unknown)) => {
                    for k in unknown {
                        out.unknown_fields += 1;
                        note(&mut out.unknown_names, || format!("field {k}"));
                    }
                    out.records.push(r);
                }
                Err(what) => {
                    out.skipped += 1;
                    note(&mut out.unknown_names, || what);
                }
            }
        }
        Ok(out)
    }
}

fn note(names: &mut Vec<String>, what: impl FnOnce() -> String) {
    let what = what();
    if !names.contains(&what) {
        names.push(what);
    }
}

fn record_of(item: Item<'_>) -> Result<(Record, Vec<Cow<'_, str>>), String> {
    let Item(Some(f)) = item else {
        return Err("a record that is not an object".to_string());
    };
    let name = f
        .name
        .as_ref()
        .and_then(Loose::as_str)
        .ok_or_else(|| "a record without a name".to_string())?;
    let category = Category::parse(
        f.category
            .as_ref()
            .and_then(Loose::as_str)
            .ok_or_else(|| format!("record {name:?} without a category"))?,
    );
    if let Category::Unknown(c) = &category {
        return Err(format!("category {c}"));
    }
    // Chapel may write non-finite reals as bare words, which are not JSON; a quoted
    // number is harmless to accept.
    let value = f
        .value
        .as_ref()
        .and_then(Loose::as_f64)
        .ok_or_else(|| format!("record {name:?} without a numeric value"))?;
    let text = |v: &Option<Loose<'_>>| v.as_ref().and_then(Loose::as_str).unwrap_or("").to_string();
    let scope = match f
        .scope
        .as_ref()
        .and_then(Loose::as_str)
        .map(|s| s.strip_prefix("MetricScope.").unwrap_or(s))
    {
        Some("GLOBAL") => Scope::Global,
        Some("LOCALE") => Scope::Locale(LocaleRef {
            num: f
                .locale_num
                .as_ref()
                .and_then(Loose::as_label)
                .ok_or_else(|| format!("locale record {name:?} without locale_num"))?,
            name: text(&f.locale_name),
            hostname: text(&f.locale_hostname),
        }),
        Some("USER") => Scope::User(
            f.user
                .as_ref()
                .and_then(Loose::as_str)
                .ok_or_else(|| format!("user record {name:?} without a user"))?
                .to_string(),
        ),
        Some("REQUEST") => Scope::Request,
        Some(other) => return Err(format!("scope {other}")),
        None => return Err(format!("record {name:?} without a scope")),
    };
    Ok((
        Record {
            name: name.to_string(),
            category,
            scope,
            value,
        },
        f.unknown,
    ))
}

/// A JSON value, kept only as far as a record field needs it.
enum Loose<'a> {
    /// A number, and its exact integer when it is one.
    Num(f64, Option<i64>),
    Str(Cow<'a, str>),
    Other,
}

impl Loose<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Loose::Num(x, _) => Some(*x),
            Loose::Str(s) => s.trim().parse().ok(),
            Loose::Other => None,
        }
    }

    /// As a label value: integers without a fraction, strings as they are.
    fn as_label(&self) -> Option<String> {
        match self {
            Loose::Num(_, Some(i)) => Some(i.to_string()),
            Loose::Num(x, None) => Some(x.to_string()),
            Loose::Str(s) => Some(s.to_string()),
            Loose::Other => None,
        }
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Num(v as f64, Some(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Num(v as f64, i64::try_from(v).ok()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Num(v, None))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

/// The fields of one record object, borrowed from the reply where possible.
#[derive(Default)]
struct Fields<'a> {
    name: Option<Loose<'a>>,
    category: Option<Loose<'a>>,
    scope: Option<Loose<'a>>,
    value: Option<Loose<'a>>,
    locale_num: Option<Loose<'a>>,
    locale_name: Option<Loose<'a>>,
    locale_hostname: Option<Loose<'a>>,
    user: Option<Loose<'a>>,
    /// Names of fields nobody knows of (`timestamp` is known, and dropped).
    unknown: Vec<Cow<'a, str>>,
}

/// One element of the records array: a record's fields, or None when it is no object.
struct Item<'a>(Option<Fields<'a>>);

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metric record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Loose<'de>>()? {
            let Loose::Str(key) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let slot = match key.as_ref() {
                "name" => &mut f.name,
                "category" => &mut f.category,
                "scope" => &mut f.scope,
                "value" => &mut f.value,
                "locale_num" => &mut f.locale_num,
                "locale_name" => &mut f.locale_name,
                "locale_hostname" => &mut f.locale_hostname,
                "user" => &mut f.user,
                "timestamp" => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    f.unknown.push(key);
                    continue;
                }
            };
            *slot = Some(map.next_value::<Loose<'de>>()?);
        }
        Ok(Item(Some(f)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        LooseVisitor.visit_seq(seq).map(|_| Item(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Item(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Item(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Item(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Item(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Item(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Item(None))
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

/// One locale of SERVER_INFO.
#[derive(Clone, Debug, PartialEq)]
pub struct LocaleInfo {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub processing_units: Option<f64>,
    pub physical_memory: Option<f64>,
    pub max_tasks: Option<f64>,
}

/// The SERVER_INFO object.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerInfo {
    pub hostname: String,
    pub version: String,
    pub server_port: Option<u64>,
    pub number_of_locales: u64,
    pub locales: Vec<LocaleInfo>,
}

pub fn parse_server_info(msg: &str) -> Result<ServerInfo, ProtocolError> {
    let bad = |e: String| ProtocolError::BadServerInfo(e);
    let v: Value = serde_json::from_str(msg).map_err(|e| bad(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| bad("not an object".into()))?;
    let text = |o: &serde_json::Map<String, Value>, k: &str| -> String {
        match o.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    };
    let number = |o: &serde_json::Map<String, Value>, k: &str| -> Option<f64> {
        match o.get(k) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
    };
    let locales: Vec<LocaleInfo> = obj
        .get("locales")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .map(|l| LocaleInfo {
                    id: text(l, "id"),
                    name: text(l, "name"),
                    hostname: text(l, "hostname"),
                    processing_units: number(l, "number_of_processing_units"),
                    physical_memory: number(l, "physical_memory"),
                    max_tasks: number(l, "max_number_of_tasks"),
                })
                .collect()
        })
        .unwrap_or_default();
    let number_of_locales = number(obj, "number_of_locales")
        .map(|n| n as u64)
        .unwrap_or(locales.len() as u64);
    if !obj.contains_key("version") && !obj.contains_key("hostname") {
        return Err(bad("neither hostname nor version".into()));
    }
    Ok(ServerInfo {
        hostname: text(obj, "hostname"),
        version: text(obj, "version"),
        server_port: number(obj, "server_port").map(|p| p as u64),
        number_of_locales,
        locales,
    })
}

/// The release named by a `getconfig` reply (`arkoudaVersion`), if it can be read.
pub fn release_from_config(msg: &str) -> Option<Release> {
    let v: Value = serde_json::from_str(msg).ok()?;
    Release::parse(v.get("arkoudaVersion")?.as_str()?)
}

/// The connection-info file `arkouda_server` writes (`<host> <port> [<url>]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub host: String,
    pub main_port: Option<u16>,
}

pub fn parse_connection_info(text: &str) -> Option<ConnectionInfo> {
    let mut fields = text.split_whitespace();
    let host = fields.next()?.to_string();
    let main_port = fields.next().and_then(|p| p.parse().ok());
    Some(ConnectionInfo { host, main_port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON values, a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_filter_map("finite", |x| serde_json::Number::from_f64(x)
                .map(Value::Number)),
            any::<i64>().prop_map(|i| Value::Number(i.into())),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("GLOBAL"),
                Just("LOCALE"),
                Just("USER"),
                Just("SYSTEM"),
                Just("NUM_REQUESTS")
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("name".to_string()),
                        Just("category".to_string()),
                        Just("scope".to_string()),
                        Just("value".to_string()),
                        Just("locale_num".to_string()),
                        Just("user".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..7
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// No input makes the reply parsers panic; every record is either kept or skipped.
        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), text in ".{0,200}") {
            let _ = parse_reply(&bytes);
            let _ = parse_reply(text.as_bytes());
            let _ = parse_records(&text);
            let _ = parse_server_info(&text);
            let _ = release_from_config(&text);
            let _ = Release::parse(&text);
            let _ = parse_connection_info(&text);
        }

        #[test]
        fn records_are_kept_or_counted(items in prop::collection::vec(json(), 0..20)) {
            let msg = Value::Array(items.clone()).to_string();
            let r = parse_records(&msg).unwrap();
            prop_assert_eq!(r.records.len() as u64 + r.skipped, items.len() as u64);
            let reply = serde_json::json!({"msg": msg, "msgType": "NORMAL", "msgFormat": "STRING", "user": ""});
            prop_assert_eq!(parse_reply(reply.to_string().as_bytes()).unwrap().msg, msg);
        }

        /// The fast reply path gives what the general one gives, for any frame.
        #[test]
        fn reply_paths_agree(msg in any::<String>(), kind in "NORMAL|WARNING|ERROR|", extra in json(), raw in ".{0,80}") {
            let frames = [
                serde_json::json!({"msg": msg, "msgType": kind, "user": "", "payload": extra}).to_string(),
                serde_json::json!({"msgType": kind, "msg": extra, "x": msg}).to_string(),
                format!(r#"{{"msg": "{raw}", "msgType": "NORMAL"}}"#),
                format!(r#"{{"msg": "a", "msg": "{raw}", "msgType": "NORMAL"}}"#),
                format!(r#"{{"m\u0073g": "a", "msg": "{raw}", "msgType": "NORMAL"}}"#),
                format!(r#" {{ "payload" : [{{"msg": "x"}}, "]"], "msg" : "{raw}" , "msgType":"WARNING"}} "#),
                format!(r#"{{"msg": "{raw}", "msgType": "NORMAL", "x": {raw}}}"#),
                format!(r#"{{"msg": "{raw}", "msgType": "NORMAL"}}{raw}"#),
                raw.clone(),
            ];
            for f in frames {
                let fast = parse_reply(f.as_bytes()).map_err(|e| e.to_string());
                let general = parse_reply_value(f.as_bytes()).map_err(|e| e.to_string());
                prop_assert_eq!(fast, general, "{}", f);
            }
        }
    }

    #[test]
    fn reply_escapes() {
        for (escaped, want) in [
            (r#"a\"b\\c\/d\b\f\n\r\t"#, "a\"b\\c/d\u{8}\u{c}\n\r\t"),
            (r#"\u00e9\u20AC x"#, "é€ x"),
            (r#"\ud83d\ude00"#, "😀"),
            (r#"\udc00"#, ""),
            (r#"[{\"name\": \"a\"}]"#, r#"[{"name": "a"}]"#),
        ] {
            let frame = format!(r#"{{"msg": "{escaped}", "msgType": "NORMAL"}}"#);
            // Surrogates are left to serde_json; everything else takes the fast path.
            assert_eq!(
                fast_reply(frame.as_bytes()).is_some(),
                !escaped.contains("\\ud"),
                "{frame}"
            );
            let fast = parse_reply(frame.as_bytes()).map_err(|e| e.to_string());
            let general = parse_reply_value(frame.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(fast, general, "{frame}");
            if !want.is_empty() {
                assert_eq!(fast.unwrap().msg, want);
            }
        }
    }

    #[test]
    fn releases() {
        assert_eq!(
            Release::parse("v2024.10.02"),
            Some(Release::new(2024, 10, 2))
        );
        assert_eq!(
            Release::parse("2022.08.15"),
            Some(Release::new(2022, 8, 15))
        );
        assert_eq!(
            Release::parse("v2022.07.28+42.g3e299b22.dirty"),
            Some(Release::new(2022, 7, 28))
        );
        let fix = Release::parse("v2026.02.02.1").unwrap();
        assert_eq!((fix.year, fix.month, fix.day, fix.fix), (2026, 2, 2, 1));
        assert_eq!(fix.to_string(), "v2026.02.02.1");
        assert!(fix > Release::new(2026, 2, 2) && fix < Release::new(2026, 2, 3));
        assert_eq!(Release::new(2024, 10, 2).to_string(), "v2024.10.02");
        assert_eq!(Release::parse("v2026.02.02.x"), None);
        assert_eq!(Release::parse("v2026.02.02.1.7"), None);
        assert_eq!(Release::parse("garbage"), None);
        assert_eq!(Release::parse("1999"), None);
        let style = |s: &str| Release::parse(s).unwrap().arg_style();
        assert_eq!(style("v2022.07.28+42.g3"), ArgStyle::Bare);
        assert_eq!(style("2022.08.30"), ArgStyle::Bare);
        assert_eq!(style("2022.09.30"), ArgStyle::JsonWithObjType);
        assert_eq!(style("2024.06.21"), ArgStyle::JsonWithObjType);
        assert_eq!(style("2024.10.02"), ArgStyle::Json);
        assert_eq!(style("2026.07.15"), ArgStyle::Json);
    }

    #[test]
    fn request_shapes() {
        let r = |style| String::from_utf8(request("u", "", "metrics", Some("ALL"), style)).unwrap();
        assert_eq!(
            r(ArgStyle::Json),
            r#"{"user": "u", "token": "", "cmd": "metrics", "format": "STRING", "args": "[\"{\\\"key\\\": \\\"category\\\", \\\"dtype\\\": \\\"str\\\", \\\"val\\\": \\\"ALL\\\"}\"]", "size": 1}"#
        );
        assert!(r(ArgStyle::JsonWithObjType)
            .contains(r#"\\\"category\\\", \\\"objType\\\": \\\"VALUE\\\", \\\"dtype"#));
        assert_eq!(
            r(ArgStyle::Bare),
            r#"{"user": "u", "token": "", "cmd": "metrics", "format": "STRING", "args": "ALL", "size": -1}"#
        );
        let g = String::from_utf8(request("u", "t", "getconfig", None, ArgStyle::Json)).unwrap();
        assert_eq!(
            g,
            r#"{"user": "u", "token": "t", "cmd": "getconfig", "format": "STRING", "args": "", "size": -1}"#
        );
        // Non-ASCII as Python escapes it (a surrogate pair beyond the BMP).
        let u = String::from_utf8(request(
            "jos\u{e9}\u{1F600}",
            "",
            "connect",
            None,
            ArgStyle::Json,
        ))
        .unwrap();
        assert!(
            u.starts_with(r#"{"user": "jos\u00e9\ud83d\ude00", "#),
            "{u}"
        );
        // The args string decodes back to the parameter the server expects.
        let v: Value = serde_json::from_str(&r(ArgStyle::Json)).unwrap();
        let list: Vec<String> = serde_json::from_str(v["args"].as_str().unwrap()).unwrap();
        let p: Value = serde_json::from_str(&list[0]).unwrap();
        assert_eq!(p["val"], "ALL");
    }

    /// The agent's frames against the real Python client's, captured at each tag
    /// (tests/fixtures/arkouda-frames, made by scripts/capture-client-frames.py).
    #[test]
    fn frames_equal_the_real_clients() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arkouda-frames");
        let mut tags = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let tag = fixture["tag"].as_str().unwrap().to_string();
            let frame = |name: &str| fixture["frames"][name].as_str().unwrap().to_string();
            let user = fixture["user"].as_str().unwrap();
            let style = Release::parse(&tag).unwrap().arg_style();
            let ours = |cmd, cat| String::from_utf8(request(user, "", cmd, cat, style)).unwrap();
            assert_eq!(
                ours("metrics", Some("ALL")),
                frame("metrics_ALL"),
                "{tag}: metrics ALL"
            );
            assert_eq!(
                ours("metrics", Some("SERVER_INFO")),
                frame("metrics_SERVER_INFO"),
                "{tag}: metrics SERVER_INFO"
            );
            assert_eq!(ours("connect", None), frame("connect"), "{tag}: connect");
            // getconfig: the agent sends it before it knows the release, in the form
            // every client sends `connect` (args "", size -1: nothing to parse in any
            // release); clients from v2022.11.10 send args "[]", size 0 (also unparsed).
            let getconfig = ours("getconfig", None);
            let real = frame("getconfig");
            if real.contains(r#""args": "", "size": -1"#) {
                assert_eq!(getconfig, real, "{tag}: getconfig");
            } else {
                assert_eq!(
                    getconfig.replace(r#""args": "", "size": -1"#, r#""args": "[]", "size": 0"#),
                    real,
                    "{tag}: getconfig"
                );
            }
            tags.push(tag);
        }
        tags.sort();
        // One fixture per era at least: bare args, objType, without objType, four-part tag.
        for want in [
            "v2022.08.30",
            "v2022.09.30",
            "v2024.06.21",
            "v2024.10.02",
            "v2026.02.02.1",
        ] {
            assert!(
                tags.iter().any(|t| t == want),
                "no fixture for {want}: {tags:?}"
            );
        }
    }

    #[test]
    fn replies_of_every_release() {
        let legacy = br#"{"msg":"[]", "msgType":"NORMAL", "msgFormat":"STRING", "user":"alice"}"#;
        let head =
            br#"{"msg":"[]", "msgType":"NORMAL", "msgFormat":"STRING", "user":"", "payload":""}"#;
        for frame in [&legacy[..], &head[..]] {
            assert_eq!(parse_reply(frame).unwrap().msg, "[]");
        }
        let err = br#"{"msg":"Error: boom", "msgType":"ERROR", "msgFormat":"STRING", "user":""}"#;
        assert_eq!(
            parse_reply(err),
            Err(ProtocolError::ServerError("Error: boom".into()))
        );
        assert!(matches!(
            parse_reply(b"\x00garbage"),
            Err(ProtocolError::NotJson(_))
        ));
        assert!(matches!(
            parse_reply(br#"{"msg":"x"}"#),
            Err(ProtocolError::MissingField("msgType"))
        ));
        assert!(matches!(
            parse_reply(br#"{"msg":"[1,2"#),
            Err(ProtocolError::NotJson(_))
        ));
    }

    #[test]
    fn records_of_every_scope_and_the_unknown() {
        let msg = r#"[{"name":"total", "category":"NUM_REQUESTS", "scope":"GLOBAL", "timestamp":"2022-08-15T06:52:33.745847", "value":0.000000e+00},
          {"name":"arkouda_memory_used_per_locale", "category":"SYSTEM", "scope":"LOCALE", "timestamp":"2022-08-15T06:52:33", "value":8.000512e+08, "locale_num":1, "locale_name":"nid002", "locale_hostname":"nid002"},
          {"name":"connect", "category":"NUM_REQUESTS", "scope":"USER", "timestamp":"x", "value":2.000000e+00, "user":"alice", "shiny":1},
          {"name":"x", "category":"FUTURE_CATEGORY", "scope":"GLOBAL", "timestamp":"x", "value":1.0},
          {"name":"y", "category":"SYSTEM", "scope":"GALAXY", "timestamp":"x", "value":1.0},
          {"name":"z", "category":"SYSTEM", "scope":"GLOBAL", "timestamp":"x"},
          17]"#;
        let r = parse_records(msg).unwrap();
        assert_eq!(r.records.len(), 3);
        assert_eq!(r.skipped, 4);
        assert_eq!(r.unknown_fields, 1);
        assert_eq!(
            r.records[1].scope,
            Scope::Locale(LocaleRef {
                num: "1".into(),
                name: "nid002".into(),
                hostname: "nid002".into()
            })
        );
        assert_eq!(r.records[1].value, 8.000512e8);
        assert_eq!(r.records[2].scope, Scope::User("alice".into()));
        assert_eq!(
            r.unknown_names,
            vec![
                "field shiny".to_string(),
                "category FUTURE_CATEGORY".into(),
                "scope GALAXY".into(),
                "record \"z\" without a numeric value".into(),
                "a record that is not an object".into()
            ]
        );
        assert!(parse_records("{}").is_err());
        assert!(parse_records("").is_err());
    }

    #[test]
    fn server_info_real_sample() {
        let msg = r#"{"hostname":"hokiegeek.local", "version":"v2022.07.28+42.g3e299b22.dirty", "server_port":5555, "locales":[{"name":"hokiegeek.local", "id":"0", "hostname":"hokiegeek.local", "number_of_processing_units":6, "physical_memory":34359738368, "max_number_of_tasks":6}], "number_of_locales":1}"#;
        let s = parse_server_info(msg).unwrap();
        assert_eq!(s.hostname, "hokiegeek.local");
        assert_eq!(s.number_of_locales, 1);
        assert_eq!(s.locales[0].id, "0");
        assert_eq!(s.locales[0].physical_memory, Some(34359738368.0));
        assert!(parse_server_info("[]").is_err());
    }

    #[test]
    fn config_and_connection_info() {
        assert_eq!(
            release_from_config(r#"{"arkoudaVersion":"v2023.06.16", "numLocales":1}"#),
            Some(Release::new(2023, 6, 16))
        );
        assert_eq!(release_from_config(""), None);
        assert_eq!(
            parse_connection_info("nid001 5555 tcp://nid001:5555?token=abc\n"),
            Some(ConnectionInfo {
                host: "nid001".into(),
                main_port: Some(5555)
            })
        );
        assert_eq!(
            parse_connection_info("nid001 5555"),
            Some(ConnectionInfo {
                host: "nid001".into(),
                main_port: Some(5555)
            })
        );
        assert_eq!(parse_connection_info("  \n"), None);
    }
}
