//! Request decoding (§1.2) and the metrics `category` argument (§2.3).
//!
//! Every `Err` returned here is, on the metrics port, a reason for the
//! metrics daemon to die silently (§2.2); on the main port it becomes an
//! ERROR reply.

use serde_json::Value;

use crate::release::{Category, Release};

/// A decoded `RequestMsg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub user: String,
    pub token: String,
    pub cmd: String,
    pub format: String,
    pub args: String,
    pub size: i64,
}

fn str_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("request field {key:?} is not a string: {other}")),
        None => Err(format!("request field {key:?} is missing")),
    }
}

/// Decode one request frame: a JSON object with the six keys of the request record in
/// any order, `size` a JSON integer. Every release's record declares all six, `size`
/// included (the v2022.08 client always sends `"size": -1`), so a request without one of
/// them is unreadable in every release.
pub fn parse_request(frame: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(frame).map_err(|e| format!("request is not UTF-8: {e}"))?;
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("request is not valid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("request is not a JSON object".to_string());
    };
    const DECLARED: [&str; 6] = ["user", "token", "cmd", "format", "args", "size"];
    if let Some(extra) = obj.keys().find(|k| !DECLARED.contains(&k.as_str())) {
        // Strict, as for parameters: an undeclared field is not known to be skipped.
        return Err(format!("request has the undeclared field {extra:?}"));
    }
    let size = match obj.get("size") {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("request field \"size\" is not an int: {n}"))?,
        Some(other) => return Err(format!("request field \"size\" is not an int: {other}")),
        None => return Err("request field \"size\" is missing".to_string()),
    };
    Ok(Request {
        user: str_field(&obj, "user")?,
        token: str_field(&obj, "token")?,
        cmd: str_field(&obj, "cmd")?,
        format: str_field(&obj, "format")?,
        args: str_field(&obj, "args")?,
        size,
    })
}

/// One parameter object `{key, dtype, val[, objType]}`; `obj_type`: the imitated
/// release's parameter record declares `objType` (v2022.09.30 – v2024.06.21), so a
/// parameter without it is unreadable.
fn parse_param(text: &str, obj_type: bool) -> Result<(String, String), String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("parameter {text:?} is not valid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(format!("parameter {text:?} is not a JSON object"));
    };
    let key = str_field(&obj, "key")?;
    let _dtype = str_field(&obj, "dtype")?;
    let val = str_field(&obj, "val")?;
    match obj.get("objType") {
        Some(o) if !o.is_string() => {
            return Err(format!("parameter objType is not a string: {o}"));
        }
        None if obj_type => return Err(format!("parameter {text:?} has no objType")),
        _ => {}
    }
    // Whether a Chapel reader skips a field its record does not declare is not settled
    // (docs/arkouda-protocol.md §3): the simulator errs on the strict side.
    let declared: &[&str] = if obj_type {
        &["key", "val", "objType", "dtype"]
    } else {
        &["key", "val", "dtype"]
    };
    if let Some(extra) = obj.keys().find(|k| !declared.contains(&k.as_str())) {
        return Err(format!(
            "parameter {text:?} has the undeclared field {extra:?}"
        ));
    }
    Ok((key, val))
}

/// `parseMessageArgs(args, size)`: only when size > 0, a JSON array of
/// JSON-encoded parameter objects.
pub fn parse_args(args: &str, size: i64, obj_type: bool) -> Result<Vec<(String, String)>, String> {
    if size <= 0 {
        return Ok(Vec::new());
    }
    let v: Value =
        serde_json::from_str(args).map_err(|e| format!("args {args:?} are not valid JSON: {e}"))?;
    let Value::Array(items) = v else {
        return Err(format!("args {args:?} are not a JSON array"));
    };
    // The server reads exactly `size` strings from the array (strict: a list of another
    // length is unreadable).
    if i64::try_from(items.len()) != Ok(size) {
        return Err(format!(
            "args {args:?} hold {} parameters, size says {size}",
            items.len()
        ));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => parse_param(s, obj_type),
            other => Err(format!(
                "args element is not a JSON-encoded string: {other}"
            )),
        })
        .collect()
}

/// The request's parameters as the imitated release reads them: from v2022.11.10 the
/// daemon parses the `args` of every command with `size` > 0 before it dispatches (an
/// unreadable list ends the daemon whatever the command); v2022.09.30 – v2022.10.13 only
/// `metrics` parses them; before, nothing is parsed (`metrics` casts the bare string).
pub fn request_params(release: Release, req: &Request) -> Result<Vec<(String, String)>, String> {
    let parse = release.parses_args_before_dispatch()
        || (release.metrics_parses_args_always() && req.cmd == "metrics");
    if parse {
        parse_args(&req.args, req.size, release.params_have_obj_type())
    } else {
        Ok(Vec::new())
    }
}

/// The category a `metrics` request asks for, as the imitated release would
/// compute it, or the reason the real server would throw.
pub fn metrics_category(
    release: Release,
    req: &Request,
    params: &[(String, String)],
) -> Result<Category, String> {
    let raw = if release.json_args() {
        match params.iter().find(|(k, _)| k == "category") {
            Some((_, v)) => v.clone(),
            None => return Err("metrics request has no \"category\" argument".to_string()),
        }
    } else {
        // v2022.08.15: the whole args string is cast to the enum.
        req.args.clone()
    };
    let cat = Category::cast(&raw)
        .filter(|c| release.categories().contains(c))
        .ok_or_else(|| format!("illegal conversion of {raw:?} to MetricCategory ({release})"))?;
    if !release.can_request_alone(cat) {
        return Err(format!(
            "category {} cannot be requested alone in {release}",
            cat.name()
        ));
    }
    Ok(cat)
}

/// What the metrics daemon does with one frame: answer the request (with the
/// category when it is `metrics`) or die silently.
pub fn metrics_port_decision(
    release: Release,
    frame: &[u8],
) -> Result<(Request, Option<Category>), String> {
    let req = parse_request(frame)?;
    let params = request_params(release, &req)?;
    let cat = if req.cmd == "metrics" {
        Some(metrics_category(release, &req, &params)?)
    } else {
        None
    };
    Ok((req, cat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_req(cat: &str, obj_type: bool) -> String {
        let param = if obj_type {
            serde_json::json!({"key":"category","dtype":"str","val":cat,"objType":"VALUE"})
        } else {
            serde_json::json!({"key":"category","dtype":"str","val":cat})
        };
        let args = serde_json::to_string(&vec![param.to_string()]).unwrap();
        serde_json::json!({"user":"alice","token":"","cmd":"metrics","format":"STRING","args":args,"size":1})
            .to_string()
    }

    fn bare_req(args: &str) -> String {
        serde_json::json!({"user":"alice","token":"","cmd":"metrics","format":"STRING","args":args,"size":-1})
            .to_string()
    }

    fn decide(r: Release, frame: &str) -> Result<Option<Category>, String> {
        metrics_port_decision(r, frame.as_bytes()).map(|(_, c)| c)
    }

    #[test]
    fn keys_in_any_order() {
        let f =
            r#"{"size":-1,"args":"","format":"STRING","cmd":"connect","token":"t","user":"bob"}"#;
        let r = parse_request(f.as_bytes()).unwrap();
        assert_eq!(r.cmd, "connect");
        assert_eq!(r.user, "bob");
        assert_eq!(r.size, -1);
    }

    #[test]
    fn die_on_malformed_requests() {
        let h = Release::Head;
        assert!(decide(h, "not json").is_err());
        assert!(decide(h, "[1,2]").is_err());
        assert!(decide(h, "{\"user\":\"a\"}").is_err());
        let quoted =
            r#"{"user":"a","token":"","cmd":"metrics","format":"STRING","args":"[]","size":"1"}"#;
        assert!(decide(h, quoted).is_err());
        let real =
            r#"{"user":"a","token":"","cmd":"connect","format":"STRING","args":"","size":1.5}"#;
        assert!(decide(h, real).is_err());
        assert!(decide(h, "{\"x\":1}BINARY_PAYLOAD").is_err());
        // Invalid UTF-8.
        assert!(metrics_port_decision(h, b"\xff\xfe").is_err());
    }

    #[test]
    fn die_on_bad_categories() {
        let h = Release::Head;
        // Missing category (no args).
        let none =
            r#"{"user":"a","token":"","cmd":"metrics","format":"STRING","args":"[]","size":0}"#;
        assert!(decide(h, none).is_err());
        assert!(decide(h, &json_req("BOGUS", false)).is_err());
        assert!(decide(h, &json_req("RESPONSE_TIME", false)).is_err());
        assert!(decide(Release::V2023_03_01, &json_req("AVG_RESPONSE_TIME", true)).is_err());
        assert!(decide(Release::V2023_04_07, &json_req("NUM_ERRORS", true)).is_err());
        assert!(decide(Release::V2022_09_30, &json_req("TOTAL_MEMORY_USED", true)).is_err());
        // Bare args on a JSON-args release, JSON args on the bare-args release.
        assert!(decide(h, &bare_req("ALL")).is_err());
        assert!(decide(Release::V2022_08_15, &json_req("ALL", false)).is_err());
        assert!(decide(Release::V2022_08_15, &bare_req("ALL extra")).is_err());
        assert!(decide(Release::V2022_08_15, &bare_req("RESPONSE_TIME")).is_err());
    }

    #[test]
    fn answer_good_requests() {
        for r in Release::ALL {
            let frame = if r.json_args() {
                json_req("ALL", r.params_have_obj_type())
            } else {
                bare_req("ALL")
            };
            assert_eq!(decide(r, &frame), Ok(Some(Category::All)), "{r}");
        }
        let h = Release::Head;
        assert_eq!(decide(h, &json_req("ALL", false)), Ok(Some(Category::All)));
        assert_eq!(
            decide(h, &json_req("MetricCategory.SERVER_INFO", false)),
            Ok(Some(Category::ServerInfo))
        );
        assert_eq!(
            decide(Release::V2024_04_19, &json_req("NUM_ERRORS", true)),
            Ok(Some(Category::NumErrors))
        );
        assert_eq!(
            decide(Release::V2022_08_15, &bare_req("SERVER_INFO")),
            Ok(Some(Category::ServerInfo))
        );
        // A command with size <= 0 is dispatched without reading its args.
        let other =
            r#"{"user":"a","token":"","cmd":"ruok","format":"STRING","args":"garbage","size":-1}"#;
        assert_eq!(decide(h, other), Ok(None));
    }

    /// The real Python client's frames of each era (tests/fixtures/arkouda-frames) are
    /// answered by the mode in force at that tag, and a neighbouring era's `metrics`
    /// frame ends the daemon where the record differs.
    #[test]
    fn real_client_frames_per_era() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arkouda-frames");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let tag = fx["tag"]
                .as_str()
                .unwrap()
                .trim_start_matches('v')
                .to_string();
            // The mode in force at `tag`: the newest mode not after it (date order; the
            // four-part `2026.02.02.1` sorts after `2026.02.02`).
            let mode = Release::ALL
                .into_iter()
                .rfind(|r| r.tag() <= tag.as_str())
                .unwrap();
            let frames = fx["frames"].as_object().unwrap();
            for (name, frame) in frames {
                let frame = frame.as_str().unwrap();
                let want = if name == "metrics_SERVER_INFO" {
                    Some(Category::ServerInfo)
                } else if name == "metrics_ALL" {
                    Some(Category::All)
                } else {
                    None
                };
                assert_eq!(decide(mode, frame), Ok(want), "{tag} {name} on {mode}");
            }
            let all = frames["metrics_ALL"].as_str().unwrap();
            for other in Release::ALL {
                let same_record = other.json_args() == mode.json_args()
                    && other.params_have_obj_type() == mode.params_have_obj_type();
                if !same_record {
                    assert!(decide(other, all).is_err(), "{tag} metrics ALL on {other}");
                }
            }
            seen += 1;
        }
        assert!(seen >= 5, "{seen} fixtures");
    }

    /// What each release's request and parameter records would not parse: the daemon
    /// dies on it (the caller then stays silent for good).
    #[test]
    fn as_strict_as_each_release() {
        let no_size = r#"{"user":"a","token":"","cmd":"metrics","format":"STRING","args":"ALL"}"#;
        let connect_bad_args = r#"{"user":"a","token":"","cmd":"connect","format":"STRING","args":"garbage","size":1}"#;
        for r in Release::ALL {
            // `size` is declared in every release's request record.
            assert!(decide(r, no_size).is_err(), "{r}: a request without size");
            // From v2022.11.10 args with size > 0 are parsed before dispatch, any command.
            assert_eq!(
                decide(r, connect_bad_args).is_err(),
                r.parses_args_before_dispatch(),
                "{r}: connect with unreadable args and size 1"
            );
            if r.json_args() {
                // objType is declared in v2022.09.30 – v2024.06.21 only.
                assert_eq!(
                    decide(r, &json_req("ALL", false)).is_err(),
                    r.params_have_obj_type(),
                    "{r}: a parameter without objType"
                );
            }
        }
        // The parameter list's length must be `size`.
        let two = json_req("ALL", false).replace(r#""size":1"#, r#""size":2"#);
        assert!(decide(Release::Head, &two).is_err());
        // v2022.09.30 – v2022.10.13: metrics parses its args whatever size says, so the
        // old bare form (size -1) has no category and ends the daemon.
        assert!(decide(Release::V2022_09_30, &bare_req("ALL")).is_err());
        assert!(Release::V2022_09_30.params_have_obj_type());
        assert!(Release::V2024_04_19.params_have_obj_type());
        assert!(!Release::V2024_10_02.params_have_obj_type());
        assert!(!Release::V2022_08_15.params_have_obj_type());
    }
}
