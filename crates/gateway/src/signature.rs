//! `X-Signature: sha1=<hex HMAC-SHA1 of the raw body>`, keyed by the registration secret.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The header the bus signs with.
pub const HEADER: &str = "x-signature";

/// Why a signature was refused (never says what the right one would have been).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request carries no X-Signature header")]
    Missing,
    #[error("the X-Signature header is not of the form sha1=<hex digest>")]
    Malformed,
    #[error("the X-Signature does not match the body")]
    Mismatch,
}

/// Checks `header` against the body. The comparison of the digests is constant-time
/// (`Mac::verify_slice`), so a caller learns nothing from how long a refusal takes.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
    let (scheme, hex) = header
        .trim()
        .split_once('=')
        .ok_or(SignatureError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("sha1") {
        return Err(SignatureError::Malformed);
    }
    let claimed = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&claimed)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value the bus would send for `body`: for tests, tools and the benchmark.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha1={hex}")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 40 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_of_the_exact_body_passes_and_anything_else_fails() {
        let body = br#"{"jsonrpc":"2.0","id":"1","method":"m","params":{}}"#;
        let good = sign(b"s3cret", body);
        assert!(good.starts_with("sha1=") && good.len() == 45, "{good}");
        assert_eq!(verify(b"s3cret", body, Some(good.as_bytes())), Ok(()));
        assert_eq!(
            verify(
                b"s3cret",
                body,
                Some(good.to_uppercase().replace("SHA1", "sha1").as_bytes())
            ),
            Ok(()),
            "hex digits in either case"
        );
        assert_eq!(
            verify(b"other", body, Some(good.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let mut changed = body.to_vec();
        changed[10] = b'X';
        assert_eq!(
            verify(b"s3cret", &changed, Some(good.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"s3cret", body, None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s3cret", body, Some(b"md5=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s3cret", body, Some(&good.as_bytes()[..44])),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_digest_is_hmac_sha1_as_published() {
        // RFC 2202, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }
}
