//! TLS for both connections, with one TLS stack (rustls with ring).
//!
//! PostgreSQL: the libpq options in `DATABASE_URL` decide. `sslmode=verify-full` checks the
//! chain and the host name, `verify-ca` the chain only, `require` and `prefer` encrypt without
//! checking who answers; `sslrootcert=<file>` names the CA certificates to trust (PEM), the
//! system's are used otherwise. Without an `sslmode` the connection is not encrypted: a
//! connector next to its database should not pay for TLS it did not ask for, and one that
//! needs it should ask for `verify-full`, since encryption without verification stops only
//! passive listeners.
//!
//! RabbitMQ: `amqps://` URLs, with RabbitMQ's own URI option `cacertfile=<file>` for a
//! private CA (the system's CAs are always trusted); the host name is always checked.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// How much of the server's certificate PostgreSQL connections check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgVerify {
    /// No TLS.
    Off,
    /// TLS, any certificate (`prefer`, `require`).
    Encrypt,
    /// TLS, a certificate from a trusted CA for any name (`verify-ca`).
    Chain,
    /// TLS, a certificate from a trusted CA for the host connected to (`verify-full`).
    Full,
}

/// The parts of a PostgreSQL URL that are about TLS, and the URL without the options
/// tokio-postgres does not know.
#[derive(Debug, Clone)]
pub struct PgTls {
    pub url: String,
    pub verify: PgVerify,
    pub root_cert: Option<String>,
}

/// Reads `sslmode` and `sslrootcert` from a URL (`postgres://…?sslmode=…`) or a key-value
/// connection string (`host=… sslmode=…`).
pub fn pg_tls(url: &str) -> anyhow::Result<PgTls> {
    let mut mode: Option<String> = None;
    let mut root_cert = None;
    let rebuilt = if url.contains("://") {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = Some(value.to_owned()),
                "sslrootcert" => root_cert = Some(value.to_owned()),
                _ => kept.push(pair),
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some(("sslmode", value)) => mode = Some(value.to_owned()),
                Some(("sslrootcert", value)) => root_cert = Some(value.to_owned()),
                _ => kept.push(pair),
            }
        }
        kept.join(" ")
    };
    let verify = match mode.as_deref() {
        None | Some("disable") => PgVerify::Off,
        Some("allow" | "prefer" | "require") => PgVerify::Encrypt,
        Some("verify-ca") => PgVerify::Chain,
        Some("verify-full") => PgVerify::Full,
        Some(other) => anyhow::bail!(
            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ),
    };
    // tokio-postgres negotiates TLS itself; it knows disable, prefer and require.
    let negotiated = match verify {
        PgVerify::Off => "disable",
        PgVerify::Encrypt if mode.as_deref() != Some("require") => "prefer",
        _ => "require",
    };
    let url = if rebuilt.contains("://") {
        let separator = if rebuilt.contains('?') { '&' } else { '?' };
        format!("{rebuilt}{separator}sslmode={negotiated}")
    } else {
        format!("{rebuilt} sslmode={negotiated}")
    };
    Ok(PgTls {
        url,
        verify,
        root_cert,
    })
}

/// The rustls client configuration of a PostgreSQL connection.
pub fn pg_client_config(tls: &PgTls) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = match tls.verify {
        PgVerify::Off | PgVerify::Encrypt => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        PgVerify::Chain | PgVerify::Full => {
            let roots = Arc::new(root_store(tls.root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .context("building the certificate verifier")?;
            let verifier: Arc<dyn ServerCertVerifier> = if tls.verify == PgVerify::Full {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// The CA certificates of a PEM file, or the system's when `file` is `None`.
pub fn root_store(file: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match file {
        Some(path) => {
            let certificates: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(Path::new(path))
                    .with_context(|| format!("reading CA certificates from {path}"))?
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("reading CA certificates from {path}"))?;
            anyhow::ensure!(!certificates.is_empty(), "{path} holds no certificate");
            for certificate in certificates {
                store
                    .add(certificate)
                    .with_context(|| format!("a CA certificate of {path}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                let _ = store.add(certificate);
            }
        }
    }
    Ok(store)
}

/// Reads a CA file for the broker connection: its PEM text.
pub fn read_ca_file(path: &str) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the broker's CA certificates from {path}"))?;
    anyhow::ensure!(
        pem.contains("BEGIN CERTIFICATE"),
        "{path} holds no PEM certificate"
    );
    Ok(pem)
}

/// `require`: encrypt, whoever answers. Signatures of the handshake are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: a trusted chain, for whatever name.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_options_are_read_and_replaced_by_what_tokio_postgres_knows() {
        let tls =
            pg_tls("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x")
                .unwrap();
        assert_eq!(tls.verify, PgVerify::Full);
        assert_eq!(tls.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(
            tls.url,
            "postgres://u@h/db?application_name=x&sslmode=require"
        );
        let tls = pg_tls("host=h dbname=db sslmode=verify-ca").unwrap();
        assert_eq!(tls.verify, PgVerify::Chain);
        assert_eq!(tls.url, "host=h dbname=db sslmode=require");
        let tls = pg_tls("postgres://u@h/db").unwrap();
        assert_eq!(tls.verify, PgVerify::Off);
        assert_eq!(tls.url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(
            pg_tls("postgres://u@h/db?sslmode=prefer").unwrap().url,
            "postgres://u@h/db?sslmode=prefer"
        );
        assert!(pg_tls("postgres://u@h/db?sslmode=sometimes").is_err());
    }
}
