//! Text and JSON that PostgreSQL accepts. It refuses U+0000 in `text` and in `jsonb`, but AMQP
//! carries it happily in a header value or a message id; a dead letter with one must still be
//! stored (a keeper that retries it forever stores nothing after it either).

use std::borrow::Cow;

use serde_json::Value;

/// What a NUL is stored as: the JSON escape, readable and unmistakable in a message id.
const NUL_ESCAPED: &str = "\\u0000";

/// `text` with each NUL written as the six characters `\u0000`.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', NUL_ESCAPED))
    } else {
        Cow::Borrowed(text)
    }
}

pub fn optional(value: Option<String>) -> Option<String> {
    value.map(|v| text(&v).into_owned())
}

/// `value` with every string and key passed through [`text`].
pub fn json(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(text(&s).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (text(&k).into_owned(), json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Whether PostgreSQL refused the values themselves (a data exception, a value over a limit),
/// so that inserting the same row again can never succeed. Anything else (an outage, a
/// missing privilege, a lost race) may pass and is worth retrying.
pub fn refused_for_its_values(error: &tokio_postgres::Error) -> bool {
    // 22: data exception (a NUL PostgreSQL will not take, an invalid escape …); 54: program
    // limit exceeded (a value too large for an index row).
    error
        .code()
        .is_some_and(|code| matches!(&code.code()[..2], "22" | "54"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_escaped_everywhere_and_nothing_else_changes() {
        assert_eq!(text("a\0b"), "a\\u0000b");
        assert!(matches!(text("plain é"), Cow::Borrowed("plain é")));
        let value = serde_json::json!({"x-\u{0}": ["a\u{0}", 1, {"k": "\u{0}"}], "n": null});
        assert_eq!(
            json(value),
            serde_json::json!({"x-\\u0000": ["a\\u0000", 1, {"k": "\\u0000"}], "n": null})
        );
    }
}
