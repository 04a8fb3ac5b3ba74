//! Whether a delivery's AMQP properties and headers were readable as sent.
//!
//! AMQP short strings (content_type, message_id, header names …) are text, but the broker
//! does not check that they are UTF-8. The published client failed the whole frame on one
//! invalid byte and stopped the module; the patched `amq-protocol-types`
//! (`vendor/amq-protocol-types`) decodes each invalid sequence as U+FFFD instead. A short
//! string carrying U+FFFD is therefore a delivery the client could not decode faithfully: it
//! is refused alone, with the property named, before its body is read.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// What the patched decoder puts in place of bytes that are not UTF-8.
const MARKER: char = char::REPLACEMENT_CHARACTER;

/// Why the delivery cannot be trusted as decoded, naming the first property, header name or
/// routing key that was not valid UTF-8; `None` when everything was.
pub fn undecodable(properties: &BasicProperties, routing_key: &str) -> Option<String> {
    let named: [(&str, &Option<ShortString>); 10] = [
        ("content_type", properties.content_type()),
        ("content_encoding", properties.content_encoding()),
        ("message_id", properties.message_id()),
        ("correlation_id", properties.correlation_id()),
        ("reply_to", properties.reply_to()),
        ("expiration", properties.expiration()),
        ("type", properties.kind()),
        ("user_id", properties.user_id()),
        ("app_id", properties.app_id()),
        ("cluster_id", properties.cluster_id()),
    ];
    for (name, value) in named {
        if let Some(value) = value.as_ref().filter(|v| marked(v.as_str())) {
            return Some(format!(
                "AMQP property {name} is not valid UTF-8 (read as {:?})",
                value.as_str()
            ));
        }
    }
    if let Some(headers) = properties.headers()
        && let Some(reason) = table_problem(headers, "")
    {
        return Some(reason);
    }
    marked(routing_key)
        .then(|| format!("AMQP routing key is not valid UTF-8 (read as {routing_key:?})"))
}

fn marked(text: &str) -> bool {
    text.contains(MARKER)
}

/// Header names are short strings at every depth (a table may hold tables and arrays of
/// them); values of type `S` are bytes and need no check.
fn table_problem(table: &FieldTable, within: &str) -> Option<String> {
    for (key, value) in table.inner() {
        if marked(key.as_str()) {
            let place = if within.is_empty() {
                String::new()
            } else {
                format!(" inside header {within:?}")
            };
            return Some(format!(
                "AMQP header name {:?}{place} is not valid UTF-8",
                key.as_str()
            ));
        }
        let path = if within.is_empty() {
            key.as_str().to_owned()
        } else {
            format!("{within}.{}", key.as_str())
        };
        if let Some(reason) = value_problem(value, &path) {
            return Some(reason);
        }
    }
    None
}

fn value_problem(value: &AMQPValue, path: &str) -> Option<String> {
    match value {
        AMQPValue::FieldTable(table) => table_problem(table, path),
        AMQPValue::FieldArray(items) => items
            .as_slice()
            .iter()
            .find_map(|item| value_problem(item, path)),
        AMQPValue::ShortString(s) if marked(s.as_str()) => {
            Some(format!("AMQP header {path:?} is not valid UTF-8"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    #[test]
    fn readable_properties_pass() {
        let mut headers = FieldTable::default();
        headers.insert("x-note".into(), AMQPValue::LongString("a\0b".into()));
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("m-1".into())
            .with_headers(headers);
        assert_eq!(
            undecodable(&properties, "magento.inventory.source.updated"),
            None
        );
    }

    #[test]
    fn each_marked_place_is_named() {
        let properties =
            BasicProperties::default().with_content_type("application/\u{fffd}json".into());
        assert_eq!(
            undecodable(&properties, "").as_deref(),
            Some(
                "AMQP property content_type is not valid UTF-8 (read as \"application/\u{fffd}json\")"
            )
        );

        let properties = BasicProperties::default().with_app_id("\u{fffd}".into());
        assert!(undecodable(&properties, "").unwrap().contains("app_id"));

        let mut headers = FieldTable::default();
        headers.insert("x-\u{fffd}".into(), AMQPValue::Boolean(true));
        let properties = BasicProperties::default().with_headers(headers);
        assert_eq!(
            undecodable(&properties, "").as_deref(),
            Some("AMQP header name \"x-\u{fffd}\" is not valid UTF-8")
        );

        let mut inner = FieldTable::default();
        inner.insert("bad-\u{fffd}".into(), AMQPValue::Void);
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner)])),
        );
        let properties = BasicProperties::default().with_headers(headers);
        assert!(
            undecodable(&properties, "")
                .unwrap()
                .contains("inside header \"x-death\""),
        );

        assert_eq!(
            undecodable(&BasicProperties::default(), "key-\u{fffd}").as_deref(),
            Some("AMQP routing key is not valid UTF-8 (read as \"key-\u{fffd}\")")
        );
    }

    #[test]
    fn long_string_values_are_bytes_and_pass() {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-raw".into(),
            AMQPValue::LongString(LongString::from(vec![0xff, 0xfe])),
        );
        let properties = BasicProperties::default().with_headers(headers);
        assert_eq!(undecodable(&properties, ""), None);
    }
}
