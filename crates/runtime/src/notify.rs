//! Telling the OMS about its messages the connector gave up on
//! (`magento.common.error_management.notify`), switched by `OMSC_NOTIFY_ERRORS`.
//!
//! The OMS cannot see the connector's dead letters; without a word from the connector, an
//! order update that failed here looks applied there. So when a module's keeper stores a dead
//! letter of a message the OMS sent, it adds an outbox row (module [`MODULE`]) in the same
//! statement as the insert: the notification exists exactly when the dead letter does, once
//! per dead letter (a redelivered dead letter is a repeat insert that adds neither), and the
//! outbox relay of every worker sends it like any other outbox row (confirmed, retried,
//! resent with the same id after a crash). A replayed dead letter that fails again is a new
//! dead letter, and a new notification.
//!
//! Which dead letters ([`notifies`]): those of a module queue bound to `oms.events`, except
//! the connector's own operator commands (`connector.*`), messages the connector published
//! itself (its `app_id`s, [`OWN_APP_IDS`]) and a notification itself, should one ever come
//! back. The gateway's queue carries only what the connector sends, so what the bus refuses
//! is never notified (no notification about a notification); a request the gateway takes
//! that no module consumes was answered with a JSON-RPC error at once and is not notified
//! again.

use lapin::types::{AMQPValue, FieldTable};
use protocol::common::{Notify, methods};
use serde_json::Value;

use crate::outbox::{BuildError, Built, OutboxHandler, OutboxRow, Outgoing};
use crate::topology::QueueSpec;

/// The outbox module of notifications, whose relay every worker with a module consumer runs.
pub const MODULE: &str = "errors";
/// The outbox topic of a notification; the row's subject is the dead letter's id.
pub const TOPIC: &str = "error.notify";

/// The `app_id`s the connector publishes with (its relays and registration, the `omsc`
/// command line): a dead letter carrying one is of the connector's own making.
pub const OWN_APP_IDS: &[&str] = &["oms-connector", "omsc"];

/// The most of a failed message's body a notification carries. The OMS sent the message and
/// keeps it (the notification names its id); a body dead-lettered for its size would make
/// the notification as large and be refused the same way.
pub const PAYLOAD_LIMIT: usize = 64 * 1024;

/// Whether a dead letter of `spec`'s queue, with this method and `app_id`, is one the OMS
/// is told about (with notifications `enabled`).
pub fn notifies(
    enabled: bool,
    spec: &QueueSpec,
    method: Option<&str>,
    app_id: Option<&str>,
) -> bool {
    enabled
        && !spec.oms_bindings.is_empty()
        && !method
            .is_some_and(|m| protocol::catalog::is_operator_command(m) || m == methods::NOTIFY)
        && !app_id.is_some_and(|a| OWN_APP_IDS.contains(&a))
}

/// The dead letter a notification is built from: no more of its body than a notification
/// carries (a body of 50 MB read whole would stay in the pooled connection's read buffer).
const LOAD: &str = "
    SELECT routing_key, endpoint, message_id, reason,
           substring(body FROM 1 FOR $2::int), octet_length(body),
           headers->>'traceparent', headers->>'tracestate'
      FROM dead_letters
     WHERE id = $1";

/// Builds notifications from their dead letters.
pub struct ErrorNotifier;

impl OutboxHandler for ErrorNotifier {
    fn module(&self) -> &'static str {
        MODULE
    }

    /// An OMS that talks AMQP may not bind `error_management.notify` (the spec does not make
    /// it consume them), and without a bus no gateway queue takes them: then nobody is told,
    /// and the row must not wait for ever (nor page an operator as a failing outbox row).
    fn unrouted(&self) -> crate::outbox::Unrouted {
        crate::outbox::Unrouted::NobodyListens
    }

    async fn build(
        &self,
        client: &deadpool_postgres::Client,
        row: &OutboxRow,
    ) -> Result<Built, BuildError> {
        let id: i64 = row.subject.parse().map_err(|_| {
            BuildError::Invalid(format!(
                "subject {:?} is not a dead letter's id",
                row.subject
            ))
        })?;
        let statement = client.prepare_cached(LOAD).await?;
        let head = i32::try_from(PAYLOAD_LIMIT).unwrap_or(i32::MAX);
        let Some(letter) = client.query_opt(&statement, &[&id, &head]).await? else {
            // Deleted by hand before it was told: nothing left to say.
            return Ok(Built::Nothing);
        };
        let notify = notification(
            letter.get(0),
            letter.get(1),
            letter.get(2),
            letter.get(3),
            letter.get::<_, &[u8]>(4),
            letter.get::<_, i32>(5).try_into().unwrap_or(usize::MAX),
        );
        let message_id = format!("error-{id}");
        let outgoing = Outgoing {
            method: methods::NOTIFY.to_owned(),
            body: notify.to_message(&message_id),
            message_id,
        };
        // The notification belongs to the trace of the message it reports, when that one
        // carried a valid context.
        let mut trace = FieldTable::default();
        for (name, value) in [
            (
                crate::trace::TRACEPARENT,
                letter.get::<_, Option<String>>(6),
            ),
            (crate::trace::TRACESTATE, letter.get(7)),
        ] {
            if let Some(value) = value {
                trace.insert(name.into(), AMQPValue::LongString(value.into()));
            }
        }
        if crate::trace::remote_context(&trace).is_some() {
            Ok(Built::InTrace(outgoing, trace))
        } else {
            Ok(Built::Message(outgoing))
        }
    }
}

/// The notification of one dead letter. The topic is the method the message was sent with:
/// its routing key, else its endpoint, else the method its body names (a letter stored in
/// its minimal form keeps only the body); `unknown` when nothing says.
fn notification(
    routing_key: Option<String>,
    endpoint: Option<String>,
    message_id: Option<String>,
    reason: String,
    body: &[u8],
    body_bytes: usize,
) -> Notify {
    let topic = routing_key
        .or(endpoint.filter(|e| e.starts_with("magento.")))
        .or_else(|| body_method(body))
        .unwrap_or_else(|| "unknown".to_owned());
    let (payload, message) = if body_bytes > PAYLOAD_LIMIT || body.len() > PAYLOAD_LIMIT {
        let text = String::from_utf8_lossy(&body[..PAYLOAD_LIMIT.min(body.len())]);
        // A character cut in two at the limit shows as one replacement character at the
        // end; drop it rather than send a half character's stand-in.
        let text = text.trim_end_matches('\u{fffd}').to_owned();
        let note = format!(
            "{reason} (payload: the first {} of {} bytes)",
            text.len(),
            body_bytes.max(body.len())
        );
        (text, note)
    } else {
        (String::from_utf8_lossy(body).into_owned(), reason)
    };
    Notify {
        topic,
        message,
        delivery_id: message_id,
        payload,
    }
}

fn body_method(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["method"].as_str().map(str::to_owned)
}

/// The method a broker-dead-lettered message was first sent with: the routing key of its
/// latest death (`x-death`, newest first), if it is one `spec`'s queue is bound to. The
/// broker dead-letters with the dead-letter queue's name as routing key, so the method
/// survives only there.
pub(crate) fn death_routing_key(headers: &FieldTable, spec: &QueueSpec) -> Option<String> {
    use lapin::types::AMQPValue;
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return None;
    };
    let AMQPValue::FieldTable(latest) = deaths.as_slice().first()? else {
        return None;
    };
    let Some(AMQPValue::FieldArray(keys)) = latest.inner().get("routing-keys") else {
        return None;
    };
    keys.as_slice().iter().find_map(|key| {
        let key = match key {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            _ => return None,
        };
        spec.oms_bindings.contains(&key.as_str()).then_some(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldArray, LongString};

    const SALES: QueueSpec = QueueSpec {
        name: "connector.sales",
        oms_bindings: &["magento.sales.order_management.updated"],
    };
    const COMMANDS: QueueSpec = QueueSpec {
        name: "connector.catalog",
        oms_bindings: &[
            "connector.catalog.export_full",
            "magento.service_bus.activation_management.activate",
        ],
    };
    const GATEWAY: QueueSpec = QueueSpec {
        name: "connector.gateway",
        oms_bindings: &[],
    };

    #[test]
    fn only_what_the_oms_sent_is_notified() {
        let update = Some("magento.sales.order_management.updated");
        assert!(notifies(true, &SALES, update, None));
        assert!(notifies(true, &SALES, None, Some("oms-service-bus")));
        assert!(!notifies(false, &SALES, update, None), "switched off");
        assert!(!notifies(true, &GATEWAY, update, None), "the gateway's own");
        assert!(!notifies(
            true,
            &COMMANDS,
            Some("connector.catalog.export_full"),
            None
        ));
        assert!(notifies(
            true,
            &COMMANDS,
            Some("magento.service_bus.activation_management.activate"),
            None
        ));
        assert!(!notifies(true, &SALES, update, Some("omsc")));
        assert!(!notifies(true, &SALES, update, Some("oms-connector")));
        assert!(!notifies(true, &SALES, Some(methods::NOTIFY), None));
    }

    #[test]
    fn the_notification_names_method_id_and_reason_and_carries_the_body() {
        let body = br#"{"jsonrpc":"2.0","id":"m-1","method":"magento.sales.order_management.updated","params":{}}"#;
        let n = notification(
            Some("magento.sales.order_management.updated".into()),
            Some("magento.sales.order_management.updated".into()),
            Some("m-1".into()),
            "params have no \"order\"".into(),
            body,
            body.len(),
        );
        assert_eq!(n.topic, "magento.sales.order_management.updated");
        assert_eq!(n.delivery_id.as_deref(), Some("m-1"));
        assert_eq!(n.message, "params have no \"order\"");
        assert_eq!(n.payload.as_bytes(), body);
        // Stored in its minimal form: the body still names the method.
        let n = notification(None, None, None, "r".into(), body, body.len());
        assert_eq!(n.topic, "magento.sales.order_management.updated");
        assert_eq!(n.delivery_id, None);
        // Nothing says: a closed label, not an empty string.
        let n = notification(None, Some("unparsed".into()), None, "r".into(), b"{", 1);
        assert_eq!(n.topic, "unknown");
    }

    #[test]
    fn a_large_body_is_cut_at_a_character_and_the_message_says_so() {
        let mut body = vec![b'a'; PAYLOAD_LIMIT - 1];
        body.extend_from_slice("é and more".as_bytes());
        let n = notification(None, None, None, "too big".into(), &body, body.len());
        assert_eq!(n.payload.len(), PAYLOAD_LIMIT - 1);
        // As loaded: the head of the body and its size.
        let head = &body[..PAYLOAD_LIMIT];
        let loaded = notification(None, None, None, "too big".into(), head, body.len());
        assert_eq!(loaded.payload, n.payload);
        assert_eq!(loaded.message, n.message);
        assert_eq!(
            n.message,
            format!(
                "too big (payload: the first {} of {} bytes)",
                PAYLOAD_LIMIT - 1,
                body.len()
            )
        );
    }

    #[test]
    fn the_method_of_a_broker_dead_letter_comes_from_its_death_record() {
        let death = |key: &str| {
            let mut entry = FieldTable::default();
            entry.insert(
                "reason".into(),
                AMQPValue::LongString("delivery_limit".into()),
            );
            entry.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                    LongString::from(key),
                )])),
            );
            let mut headers = FieldTable::default();
            headers.insert(
                "x-death".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(entry)])),
            );
            headers
        };
        assert_eq!(
            death_routing_key(&death("magento.sales.order_management.updated"), &SALES).as_deref(),
            Some("magento.sales.order_management.updated")
        );
        // A queue's name (a retry's way back) is no method.
        assert_eq!(death_routing_key(&death("connector.sales"), &SALES), None);
        assert_eq!(death_routing_key(&FieldTable::default(), &SALES), None);
    }
}
