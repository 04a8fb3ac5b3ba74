//! What the bus POSTs, read just enough to route it: a JSON-RPC request or a batch of them.
//! The bytes of each request are kept as they came: they are what the broker carries.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// JSON-RPC error codes the gateway answers with.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// Server error range: the request was refused before it was read (signature, size,
    /// load) or could not be handed on (broker unavailable).
    pub const SERVER_ERROR: i64 = -32000;
}

/// A request fit to publish.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Its exact bytes.
    pub raw: &'a str,
    pub method: String,
    /// The id as sent (`null` when there is none), echoed in the reply.
    pub id: Value,
}

impl Request<'_> {
    /// The AMQP message id: the JSON-RPC id (a string as it is, a number as its text), or a
    /// digest of the body when there is none, so a request the bus sends again carries the
    /// same id.
    pub fn message_id(&self) -> String {
        match &self.id {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                use sha2::Digest as _;
                let digest = sha2::Sha256::digest(self.raw.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}")
            }
        }
    }
}

/// A request that cannot be published, and the JSON-RPC error that says why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub id: Value,
    pub code: i64,
    pub message: String,
}

/// What a body holds.
#[derive(Debug)]
pub enum Body<'a> {
    Single(Result<Request<'a>, Invalid>),
    Batch(Vec<Result<Request<'a>, Invalid>>),
}

/// Reads a body. `Err` means it is not JSON-RPC at all (answered as a whole, HTTP 400).
pub fn read(body: &[u8]) -> Result<Body<'_>, Invalid> {
    let text = std::str::from_utf8(body).map_err(|e| Invalid {
        id: Value::Null,
        code: codes::PARSE_ERROR,
        message: format!("the body is not UTF-8 text: {e}"),
    })?;
    let whole: &RawValue = serde_json::from_str(text).map_err(|e| Invalid {
        id: Value::Null,
        code: codes::PARSE_ERROR,
        message: format!("the body is not JSON: {e}"),
    })?;
    match whole.get().trim_start().as_bytes().first() {
        Some(b'{') => Ok(Body::Single(request(whole))),
        Some(b'[') => {
            let elements: Vec<&RawValue> =
                serde_json::from_str(whole.get()).expect("a JSON array reads as an array");
            if elements.is_empty() {
                return Err(Invalid {
                    id: Value::Null,
                    code: codes::INVALID_REQUEST,
                    message: "the batch is empty".into(),
                });
            }
            Ok(Body::Batch(elements.into_iter().map(request).collect()))
        }
        _ => Err(not_a_request(Value::Null)),
    }
}

fn not_a_request(id: Value) -> Invalid {
    Invalid {
        id,
        code: codes::INVALID_REQUEST,
        message: "a request must be a JSON-RPC object (or a batch: an array of them)".into(),
    }
}

/// The members of a request the gateway reads; the params stay unparsed (the modules parse
/// them), so a request costs one pass over its bytes beyond the envelope.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// `Some` for a member that is there, even as `null` (which is not an object of params).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What kind of JSON value `raw` is, from its first byte.
fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn request(raw: &RawValue) -> Result<Request<'_>, Invalid> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(not_a_request(Value::Null));
    }
    let Ok(members) = serde_json::from_str::<Members<'_>>(raw.get()) else {
        // An object that does not read as one request (a member twice, say).
        return Err(not_a_request(Value::Null));
    };
    let id = members.id;
    let method = match members.method {
        Some(Value::String(m)) if !m.trim().is_empty() => m,
        Some(Value::String(_)) => {
            return Err(invalid(id, codes::INVALID_REQUEST, "method is empty"));
        }
        Some(other) => {
            return Err(invalid(
                id,
                codes::INVALID_REQUEST,
                &format!("method must be a string, not {}", kind(&other)),
            ));
        }
        None => {
            return Err(invalid(
                id,
                codes::INVALID_REQUEST,
                "the request has no method",
            ));
        }
    };
    if method.len() > 255 || method.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // The method becomes the routing key: at most 255 bytes, and nothing a person would
        // misread in a log.
        return Err(invalid(
            id,
            codes::INVALID_REQUEST,
            &format!("method {method:?} is not a method name"),
        ));
    }
    if let Some(params) = members.params
        && raw_kind(params) != "an object"
    {
        return Err(invalid(
            id,
            codes::INVALID_PARAMS,
            &format!(
                "params of {method} must be an object, not {}",
                raw_kind(params)
            ),
        ));
    }
    Ok(Request {
        raw: raw.get(),
        method,
        id,
    })
}

fn invalid(id: Value, code: i64, message: &str) -> Invalid {
    Invalid {
        id,
        code,
        message: message.to_owned(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `{"jsonrpc":"2.0","id":…,"result":null}`: taken.
pub fn success(id: &Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": null})
}

/// `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}`.
pub fn error(id: &Value, code: i64, message: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> Result<Request<'_>, Invalid> {
        match read(body.as_bytes()).unwrap() {
            Body::Single(r) => r,
            Body::Batch(_) => panic!("not a batch"),
        }
    }

    #[test]
    fn a_request_keeps_its_bytes_and_its_id() {
        let body = r#"{"jsonrpc":"2.0", "id":"a-1","method":"magento.x.y.z","params":{"k":1},"client":"FAKE"}"#;
        let request = single(body).unwrap();
        assert_eq!(request.raw, body);
        assert_eq!(request.method, "magento.x.y.z");
        assert_eq!(request.message_id(), "a-1");
        let numbered = single(r#"{"id":42,"method":"m"}"#).unwrap();
        assert_eq!(numbered.message_id(), "42");
        let anonymous = single(r#"{"method":"m","params":{}}"#).unwrap();
        assert!(anonymous.message_id().starts_with("sha256:"));
        assert_eq!(
            anonymous.message_id(),
            single(r#"{"method":"m","params":{}}"#)
                .unwrap()
                .message_id()
        );
    }

    #[test]
    fn each_bad_request_says_what_is_wrong() {
        assert_eq!(read(b"{nope").unwrap_err().code, codes::PARSE_ERROR);
        assert_eq!(read(b"42").unwrap_err().code, codes::INVALID_REQUEST);
        assert_eq!(read(b"[]").unwrap_err().code, codes::INVALID_REQUEST);
        let no_method = single(r#"{"id":"1","params":{}}"#).unwrap_err();
        assert_eq!(
            (no_method.code, no_method.id.clone()),
            (codes::INVALID_REQUEST, Value::from("1"))
        );
        assert!(no_method.message.contains("no method"));
        let params = single(r#"{"id":"2","method":"m","params":[1]}"#).unwrap_err();
        assert_eq!(params.code, codes::INVALID_PARAMS);
        assert!(params.message.contains("an array"), "{}", params.message);
        assert!(single(r#"{"id":"3","method":"a b"}"#).is_err());
        for (params, kind) in [("null", "null"), ("\"x\"", "a string"), ("-1", "a number")] {
            let refused =
                single(&format!(r#"{{"id":"4","method":"m","params":{params}}}"#)).unwrap_err();
            assert_eq!(refused.code, codes::INVALID_PARAMS);
            assert!(refused.message.ends_with(kind), "{}", refused.message);
        }
        let twice = single(r#"{"id":"5","method":"m","method":"n"}"#).unwrap_err();
        assert_eq!(twice.code, codes::INVALID_REQUEST);
    }

    #[test]
    fn a_batch_is_read_element_by_element() {
        let body = br#"[{"id":1,"method":"m"}, 7, {"id":2}]"#;
        let Body::Batch(elements) = read(body).unwrap() else {
            panic!("a batch");
        };
        assert_eq!(elements.len(), 3);
        assert_eq!(
            elements[0].as_ref().unwrap().raw,
            r#"{"id":1,"method":"m"}"#
        );
        assert_eq!(
            elements[1].as_ref().unwrap_err().code,
            codes::INVALID_REQUEST
        );
        assert_eq!(elements[2].as_ref().unwrap_err().id, Value::from(2));
    }
}
