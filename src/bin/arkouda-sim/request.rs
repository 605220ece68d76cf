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

/// Decode one request frame: a JSON object with the six keys in any order,
/// `size` a JSON integer. Releases before v2022.09.30 (`json_args` false) had
/// no `size` field in `RequestMsg`: there it may be absent (and is -1).
pub fn parse_request(frame: &[u8], json_args: bool) -> Result<Request, String> {
    let text = std::str::from_utf8(frame).map_err(|e| format!("request is not UTF-8: {e}"))?;
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("request is not valid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("request is not a JSON object".to_string());
    };
    let size = match obj.get("size") {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("request field \"size\" is not an int: {n}"))?,
        Some(other) => return Err(format!("request field \"size\" is not an int: {other}")),
        None if !json_args => -1,
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

/// One parameter object `{key, dtype, val[, objType]}`.
fn parse_param(text: &str) -> Result<(String, String), String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("parameter {text:?} is not valid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(format!("parameter {text:?} is not a JSON object"));
    };
    let key = str_field(&obj, "key")?;
    let _dtype = str_field(&obj, "dtype")?;
    let val = str_field(&obj, "val")?;
    if let Some(o) = obj.get("objType") {
        if !o.is_string() {
            return Err(format!("parameter objType is not a string: {o}"));
        }
    }
    Ok((key, val))
}

/// `parseMessageArgs(args, size)`: only when size > 0, a JSON array of
/// JSON-encoded parameter objects.
pub fn parse_args(args: &str, size: i64) -> Result<Vec<(String, String)>, String> {
    if size <= 0 {
        return Ok(Vec::new());
    }
    let v: Value =
        serde_json::from_str(args).map_err(|e| format!("args {args:?} are not valid JSON: {e}"))?;
    let Value::Array(items) = v else {
        return Err(format!("args {args:?} are not a JSON array"));
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => parse_param(s),
            other => Err(format!(
                "args element is not a JSON-encoded string: {other}"
            )),
        })
        .collect()
}

/// The category a `metrics` request asks for, as the imitated release would
/// compute it, or the reason the real server would throw.
pub fn metrics_category(release: Release, req: &Request) -> Result<Category, String> {
    let raw = if release.json_args() {
        let params = parse_args(&req.args, req.size)?;
        match params.into_iter().find(|(k, _)| k == "category") {
            Some((_, v)) => v,
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
    let req = parse_request(frame, release.json_args())?;
    let cat = if req.cmd == "metrics" {
        Some(metrics_category(release, &req)?)
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
        let r = parse_request(f.as_bytes(), true).unwrap();
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
                json_req("ALL", true)
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
        // Non-metrics commands never look at args.
        let other =
            r#"{"user":"a","token":"","cmd":"ruok","format":"STRING","args":"garbage","size":3}"#;
        assert_eq!(decide(h, other), Ok(None));
    }
}
