//! Shipping methods as the OMS knows them: products of type `shipping` named by
//! [`protocol::shipping::method_code`], ACTIVE while the method and its carrier are active.

use protocol::catalog::{Product, ProductPrice};

const METHOD: &str = "
    SELECT m.active AND c.active, c.title, m.title, m.price::text, m.currency
      FROM shipping_methods m
      JOIN shipping_carriers c ON c.code = m.carrier_code
     WHERE m.carrier_code = $1 AND m.method_code = $2";

/// The outbox subject of a method: `<carrier>/<method>` (carrier codes hold no `/`).
pub fn subject(carrier: &str, method: &str) -> String {
    format!("{carrier}/{method}")
}

/// Splits an outbox subject into carrier and method codes.
pub fn parse_subject(subject: &str) -> Option<(&str, &str)> {
    subject
        .split_once('/')
        .filter(|(c, m)| !c.is_empty() && !m.is_empty())
}

/// The method as it is now; a method that is gone exports as INACTIVE.
pub async fn method(
    client: &impl deadpool_postgres::GenericClient,
    carrier: &str,
    method: &str,
) -> Result<Product, tokio_postgres::Error> {
    let Some(row) = client.query_opt(METHOD, &[&carrier, &method]).await? else {
        return Ok(Product::shipping_method(carrier, method, None, false, None));
    };
    let enabled: bool = row.get(0);
    let title = display_title(row.get(1), row.get(2));
    let price = match (
        row.get::<_, Option<String>>(3),
        row.get::<_, Option<String>>(4),
    ) {
        (Some(amount), Some(currency)) => amount
            .parse::<f64>()
            .ok()
            .map(|amount| ProductPrice { currency, amount }),
        _ => None,
    };
    Ok(Product::shipping_method(
        carrier,
        method,
        Some(title),
        enabled,
        price,
    ))
}

/// "Carrier - Method", as checkout shows it; either alone when the other is empty.
fn display_title(carrier: &str, method: &str) -> String {
    match (carrier.trim(), method.trim()) {
        ("", m) => m.to_owned(),
        (c, "") => c.to_owned(),
        (c, m) => format!("{c} - {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_titles_read_like_checkout() {
        assert_eq!(parse_subject(&subject("ups", "GND")), Some(("ups", "GND")));
        assert_eq!(parse_subject("ups/a/b"), Some(("ups", "a/b")));
        assert_eq!(parse_subject("nothing"), None);
        assert_eq!(display_title("UPS", "Ground"), "UPS - Ground");
        assert_eq!(display_title("", "Ground"), "Ground");
    }
}
