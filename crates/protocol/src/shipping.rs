//! Shipping method codes, shared by the order export (the `SHIPPING` line's `sku`) and the
//! logistics sync (shipping methods exported as products of type `shipping`).

/// The Commerce carrier code of flat-rate shipping, exported as `STANDARD`.
pub const FLAT_RATE_CARRIER: &str = "flatrate";

/// The OMS code of a Commerce shipping method: `STANDARD` for flat rate, otherwise
/// `<CARRIER>-<Method>` (the carrier code upper-cased, the method code as it is).
pub fn method_code(carrier: &str, method: &str) -> String {
    let carrier = carrier.trim();
    if carrier.eq_ignore_ascii_case(FLAT_RATE_CARRIER) {
        "STANDARD".to_owned()
    } else {
        format!("{}-{}", carrier.to_ascii_uppercase(), method.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_rate_is_standard_and_others_name_carrier_and_method() {
        assert_eq!(method_code("flatrate", "flatrate"), "STANDARD");
        assert_eq!(method_code("ups", "GND"), "UPS-GND");
        assert_eq!(method_code("dhl", "Express"), "DHL-Express");
    }
}
