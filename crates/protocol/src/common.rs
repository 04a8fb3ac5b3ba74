//! Messages every module may send (`common/error.xml`): `error_management.notify` tells the
//! OMS that the connector could not process one of its messages.

use serde::Serialize;

use crate::OutgoingEnvelope;

pub mod methods {
    pub const NOTIFY: &str = "magento.common.error_management.notify";
}

/// The params of `magento.common.error_management.notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notify {
    /// The method of the message that failed (the spec's "original topic").
    pub topic: String,
    /// Why it failed.
    pub message: String,
    /// The failed message's id, when it had one (optional in the specification: left out
    /// when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The failed message's body, as text.
    pub payload: String,
}

impl Notify {
    pub fn to_message(&self, message_id: &str) -> Vec<u8> {
        OutgoingEnvelope::new(Some(message_id), methods::NOTIFY, self).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::spec;

    #[test]
    fn a_notification_matches_the_specification_with_and_without_a_delivery_id() {
        let mut notify = Notify {
            topic: "magento.sales.order_management.updated".into(),
            message: "\"order_id\" is missing".into(),
            delivery_id: Some("m-1".into()),
            payload: r#"{"jsonrpc":"2.0","id":"m-1"}"#.into(),
        };
        for _ in 0..2 {
            let body: serde_json::Value =
                serde_json::from_slice(&notify.to_message("error-1")).unwrap();
            assert_eq!(body["method"], methods::NOTIFY);
            assert_eq!(body["id"], "error-1");
            assert_eq!(
                spec().check_params(methods::NOTIFY, &body["params"]),
                Vec::<String>::new()
            );
            assert_eq!(
                body["params"].get("delivery_id").is_some(),
                notify.delivery_id.is_some()
            );
            notify.delivery_id = None;
        }
    }
}
