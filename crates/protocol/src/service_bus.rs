//! Registration with the OMS (`service-bus/remote.xml`): `register` announces the connector,
//! the methods it consumes and its labels; `unregister` withdraws it. The bus may ask for a
//! registration with `activation_management.activate` (`service-bus/activation.xml`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::lenient::{self, Scalar};
use crate::{OutgoingEnvelope, Rejection};

pub mod methods {
    pub const REGISTER: &str = "magento.service_bus.remote.register";
    pub const UNREGISTER: &str = "magento.service_bus.remote.unregister";
    /// The bus asks the connector to register (again): inbound.
    pub const ACTIVATE: &str = "magento.service_bus.activation_management.activate";
}

/// The params of `magento.service_bus.activation_management.activate`: the bus asks the
/// application to register itself for the tenant `client_id`. The specification says it may
/// come any number of times with the same params and that an application already registered
/// renews its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activate {
    pub client_id: String,
}

/// The wire form of the activation's params, as senders write it.
#[derive(Deserialize)]
pub(crate) struct WireActivateParams {
    client_id: Option<Scalar>,
}

/// Parses the params of `activation_management.activate`: `client_id` is required (a number
/// is taken in its decimal form, as for every id).
pub fn parse_activate(params: &RawValue) -> Result<Activate, Rejection> {
    let wire: WireActivateParams = crate::parse_params(params)?;
    Ok(Activate {
        client_id: lenient::required_string(wire.client_id, "client_id")?,
    })
}

/// The params of `magento.service_bus.remote.register`. Every argument is optional in the
/// specification; empty ones are left out.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Register {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// The methods the connector consumes, sorted and without repeats.
    pub subscribes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Never prints the secret: registrations are logged and shown.
impl fmt::Debug for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Register")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &if self.secret.is_empty() { "" } else { "***" })
            .field("subscribes", &self.subscribes)
            .field("labels", &self.labels)
            .finish()
    }
}

impl Register {
    pub fn to_message(&self, message_id: &str) -> Vec<u8> {
        OutgoingEnvelope::new(Some(message_id), methods::REGISTER, self).to_vec()
    }
}

/// The params of `magento.service_bus.remote.unregister`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unregister {
    pub id: String,
}

impl Unregister {
    pub fn to_message(&self, message_id: &str) -> Vec<u8> {
        OutgoingEnvelope::new(Some(message_id), methods::UNREGISTER, self).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::spec;

    fn register() -> Register {
        Register {
            id: "shop-1".into(),
            url: "https://shop.example/oms".into(),
            secret: "hunter2".into(),
            subscribes: vec!["magento.inventory.source_management.created".into()],
            labels: BTreeMap::from([("version".into(), "1.0.0".into())]),
        }
    }

    #[test]
    fn register_and_unregister_match_the_specification() {
        let body: serde_json::Value =
            serde_json::from_slice(&register().to_message("m-1")).unwrap();
        assert_eq!(body["method"], methods::REGISTER);
        assert!(
            spec()
                .check_params(methods::REGISTER, &body["params"])
                .is_empty()
        );
        let body: serde_json::Value = serde_json::from_slice(
            &Unregister {
                id: "shop-1".into(),
            }
            .to_message("m-2"),
        )
        .unwrap();
        assert!(
            spec()
                .check_params(methods::UNREGISTER, &body["params"])
                .is_empty()
        );
    }

    #[test]
    fn an_activation_needs_its_client_id() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(
            parse_activate(&raw(r#"{"client_id":"tenant-7","extra":1}"#)).unwrap(),
            Activate {
                client_id: "tenant-7".into()
            }
        );
        assert_eq!(
            parse_activate(&raw(r#"{"client_id":42}"#))
                .unwrap()
                .client_id,
            "42"
        );
        for (params, reason) in [
            ("{}", "\"client_id\" is missing"),
            (r#"{"client_id":""}"#, "\"client_id\" is empty"),
            (r#"{"client_id":["a"]}"#, "\"client_id\" must be a string"),
            ("[]", "params are malformed"),
        ] {
            let refused = parse_activate(&raw(params)).unwrap_err();
            assert!(refused.reason().contains(reason), "{params}: {refused}");
        }
        assert!(spec().methods.contains_key(methods::ACTIVATE));
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let text = format!("{:?}", register());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("shop-1"));
    }
}
