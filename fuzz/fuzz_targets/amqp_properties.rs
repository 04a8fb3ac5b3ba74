//! Any bytes as the properties of an AMQP content header (content_type, message_id, headers
//! …), read by the patched decoder (vendor/amq-protocol-types) and then by the runtime's check
//! of what it decoded. Short strings that are not UTF-8 must decode (with U+FFFD) instead of
//! failing the frame; whatever decodes must fit in a short string again and encode back to
//! the same properties, since a dead letter re-sends them; the runtime's check must answer,
//! never panic.

#![no_main]

use lapin::protocol::basic::{AMQPProperties, gen_properties, parse_properties};
use lapin::types::{AMQPValue, FieldTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((_, properties)) = parse_properties(data) else {
        return;
    };
    let named = [
        properties.content_type(),
        properties.content_encoding(),
        properties.message_id(),
        properties.correlation_id(),
        properties.reply_to(),
        properties.expiration(),
        properties.kind(),
        properties.user_id(),
        properties.app_id(),
        properties.cluster_id(),
    ];
    for value in named.into_iter().flatten() {
        assert!(value.as_str().len() <= 255, "a decoded short string must fit");
    }
    if let Some(headers) = properties.headers() {
        assert_names_fit(headers);
    }
    let _ = runtime::properties::undecodable(&properties, "");

    // Compared as bytes: a header may hold a NaN, which equals nothing.
    let encoded = encode(&properties);
    let (rest, again): (&[u8], AMQPProperties) =
        parse_properties(&encoded[..]).expect("encoded properties decode again");
    assert!(rest.is_empty());
    assert_eq!(encode(&again), encoded, "properties survive being sent again");
});

fn encode(properties: &AMQPProperties) -> Vec<u8> {
    cookie_factory::gen_simple(gen_properties(properties), Vec::new())
        .expect("decoded properties encode again")
}

fn assert_names_fit(table: &FieldTable) {
    for (key, value) in table.inner() {
        assert!(key.as_str().len() <= 255, "a decoded header name must fit");
        assert_value_fits(value);
    }
}

fn assert_value_fits(value: &AMQPValue) {
    match value {
        AMQPValue::FieldTable(table) => assert_names_fit(table),
        AMQPValue::FieldArray(items) => items.as_slice().iter().for_each(assert_value_fits),
        _ => {}
    }
}
