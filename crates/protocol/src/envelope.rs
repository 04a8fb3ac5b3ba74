//! The JSON-RPC 2.0 envelope every message travels in.

use std::borrow::Cow;
use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Limits, Rejection};

/// An inbound message, parsed only as far as the envelope: the `params` stay raw JSON so that
/// each module parses them into its own types, and so that a body is read once.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub id: Option<MessageId>,
    pub method: Cow<'a, str>,
    pub params: Option<&'a RawValue>,
}

/// The envelope `id`: opaque. Senders use uuids, `uniqid()` strings or integers; it is kept
/// in its textual form, which is also what travels as the AMQP `message_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize)]
struct WireEnvelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// Parses a message body. Unknown top-level keys are ignored; everything that makes the
    /// envelope unusable is a [`Rejection`] naming the problem.
    pub fn parse(body: &'a [u8], limits: &Limits) -> Result<Self, Rejection> {
        if body.len() > limits.max_body_bytes {
            return Err(Rejection::new(format!(
                "message body is {} bytes, over the limit of {} bytes",
                body.len(),
                limits.max_body_bytes
            )));
        }
        let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
        if first != Some(b'{') {
            return Err(not_an_object(body));
        }
        let wire: WireEnvelope<'a> = serde_json::from_slice(body)
            .map_err(|e| Rejection::new(format!("body is not valid JSON: {e}")))?;

        if let Some(version) = wire.jsonrpc {
            let version = version.get();
            if version != "\"2.0\"" && version != "null" {
                return Err(Rejection::new(format!(
                    "unsupported \"jsonrpc\" version {version} (expected \"2.0\")"
                )));
            }
        }
        let method = match wire.method {
            Some(m) if !m.trim().is_empty() => m,
            Some(_) => return Err(Rejection::new("envelope \"method\" is empty")),
            None => return Err(Rejection::new("envelope has no \"method\"")),
        };
        let params = match wire.params {
            None => None,
            Some(raw) => match raw.get().as_bytes().first() {
                Some(b'{') => Some(raw),
                Some(b'n') => None,
                Some(b'[') => {
                    return Err(Rejection::new(
                        "envelope \"params\" is an array; this protocol only has named params (an object)",
                    ));
                }
                _ => {
                    return Err(Rejection::new(format!(
                        "envelope \"params\" must be an object, got {}",
                        json_kind(raw.get())
                    )));
                }
            },
        };
        if let Some(params) = params {
            // Before any parser builds rows from them: see `rows`.
            crate::rows::check(params, limits)?;
        }
        let id = wire.id.and_then(|raw| {
            let text = raw.get();
            match text.as_bytes().first() {
                Some(b'n') => None,
                Some(b'"') => serde_json::from_str::<String>(text).ok().map(MessageId),
                _ => Some(MessageId(text.to_owned())),
            }
        });
        Ok(Self { id, method, params })
    }

    /// The params, or a rejection saying they are missing.
    pub fn require_params(&self) -> Result<&'a RawValue, Rejection> {
        self.params
            .ok_or_else(|| Rejection::new("envelope has no \"params\""))
    }
}

fn not_an_object(body: &[u8]) -> Rejection {
    match serde_json::from_slice::<IgnoredAny>(body) {
        Err(e) => Rejection::new(format!("body is not valid JSON: {e}")),
        Ok(_) => {
            let text = String::from_utf8_lossy(body);
            Rejection::new(format!(
                "body is JSON but not an object (got {}); a message is a JSON-RPC request object",
                json_kind(text.trim_start())
            ))
        }
    }
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'{') => "an object",
        Some(_) => "a number",
        None => "nothing",
    }
}

/// An outbound message: exactly the JSON-RPC 2.0 fields, in the order the OMS documents them.
#[derive(Debug, Serialize)]
pub struct OutgoingEnvelope<'a, P: Serialize> {
    pub jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub method: &'a str,
    pub params: &'a P,
}

impl<'a, P: Serialize> OutgoingEnvelope<'a, P> {
    pub fn new(id: Option<&'a str>, method: &'a str, params: &'a P) -> Self {
        Self {
            jsonrpc: "2.0",
            id,
            method,
            params,
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail: every type we emit is a tree of
        // strings, numbers and maps with string keys.
        serde_json::to_vec(self).expect("outbound messages serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Envelope<'_>, Rejection> {
        Envelope::parse(body.as_bytes(), &Limits::default())
    }

    #[test]
    fn accepts_string_integer_and_missing_ids() {
        let e = parse(r#"{"jsonrpc":"2.0","id":"abc","method":"m","params":{}}"#).unwrap();
        assert_eq!(e.id.unwrap().as_str(), "abc");
        let e = parse(r#"{"jsonrpc":"2.0","id":42,"method":"m","params":{}}"#).unwrap();
        assert_eq!(e.id.unwrap().as_str(), "42");
        let e = parse(r#"{"jsonrpc":"2.0","id":null,"method":"m","params":{}}"#).unwrap();
        assert!(e.id.is_none());
        let e = parse(r#"{"method":"m","params":{}}"#).unwrap();
        assert!(e.id.is_none());
    }

    #[test]
    fn ignores_unknown_top_level_keys() {
        let e =
            parse(r#"{"client":"FAKE","jsonrpc":"2.0","method":"m","params":{"a":1}}"#).unwrap();
        assert_eq!(e.method, "m");
        assert_eq!(e.params.unwrap().get(), r#"{"a":1}"#);
    }

    #[test]
    fn rejects_what_cannot_be_an_envelope() {
        let cases = [
            ("not json at all", "not valid JSON"),
            ("{\"method\": ", "not valid JSON"),
            ("[1,2]", "not an object"),
            ("\"x\"", "not an object"),
            ("{\"params\":{}}", "no \"method\""),
            ("{\"method\":\"\",\"params\":{}}", "\"method\" is empty"),
            ("{\"method\":\"m\",\"params\":[1]}", "is an array"),
            (
                "{\"method\":\"m\",\"params\":3}",
                "must be an object, got a number",
            ),
            ("{\"jsonrpc\":\"1.0\",\"method\":\"m\"}", "unsupported"),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            assert!(
                err.reason().contains(expected),
                "{body:?}: {err} does not mention {expected:?}"
            );
        }
    }

    #[test]
    fn refuses_bodies_over_the_limit_before_parsing() {
        let limits = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        let err = Envelope::parse(br#"{"method":"m","params":{}}"#, &limits).unwrap_err();
        assert!(err.reason().contains("over the limit of 10 bytes"), "{err}");
    }

    #[test]
    fn params_with_a_list_over_the_row_limit_are_refused_before_any_parser() {
        let limits = Limits {
            max_message_rows: 2,
            ..Limits::default()
        };
        let body = br#"{"method":"m","params":{"order":{"lines":[{},{},{}]}}}"#;
        let err = Envelope::parse(body, &limits).unwrap_err();
        assert_eq!(
            err.reason(),
            "order.lines has more than 2 rows; the limit is OMSC_MAX_MESSAGE_ROWS"
        );
        let body = br#"{"method":"m","params":{"order":{"lines":[{},{}]}}}"#;
        assert!(Envelope::parse(body, &limits).is_ok());
    }

    #[test]
    fn deep_nesting_neither_crashes_nor_recurses() {
        // serde_json skips raw values iteratively, so even 100,000 levels cost a linear scan
        // and no stack; the typed parsers then decide whether the shape is acceptable.
        let body = format!(
            r#"{{"method":"m","params":{{"x":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let envelope = parse(&body);
        assert!(envelope.is_ok_and(|e| e.params.is_some()));
    }

    #[test]
    fn outgoing_envelope_has_exactly_the_jsonrpc_fields() {
        let params = serde_json::json!({"a": 1});
        let bytes = OutgoingEnvelope::new(Some("id-1"), "m.x", &params).to_vec();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"jsonrpc":"2.0","id":"id-1","method":"m.x","params":{"a":1}}"#
        );
    }
}
