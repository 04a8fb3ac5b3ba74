//! TLS to PostgreSQL and to the broker, against local servers with certificates made for the
//! test: a PostgreSQL server of its own (initdb, `ssl = on`), and the local broker behind a
//! TLS listener, as a load balancer would terminate it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{PATIENCE, TestEnv, http_get, wait_until};

/// A certificate authority and a server certificate it signed, as PEM files in `dir`.
struct Certificates {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn make_certificates(dir: &Path, ca_name: &str, server_names: &[&str]) -> Certificates {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let names: Vec<String> = server_names.iter().map(|n| (*n).to_owned()).collect();
    let mut server_params = CertificateParams::new(names).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, server_names[0]);
    let server_key = KeyPair::generate().unwrap();
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
    let files = Certificates {
        ca: dir.join(format!("{ca_name}.pem")),
        server_cert: dir.join(format!("{ca_name}-server.pem")),
        server_key: dir.join(format!("{ca_name}-server.key")),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.server_cert, server.pem()).unwrap();
    std::fs::write(&files.server_key, server_key.serialize_pem()).unwrap();
    files
}

fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "omsc-{label}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    test_support::http::free_address().unwrap().port()
}

/// A PostgreSQL server of the test's own, with TLS on: initdb'd into a temporary directory,
/// run as the `postgres` user when the test runs as root (PostgreSQL refuses root).
struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PgServer {
    fn start(certificates: &Certificates) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries (Debian's postgresql package)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/<version>/bin");
        let dir = scratch_dir("pg");
        let port = free_port();
        let data = dir.join("data");
        let key = dir.join("server.key");
        std::fs::copy(&certificates.server_key, &key).unwrap();
        std::fs::copy(&certificates.server_cert, dir.join("server.pem")).unwrap();
        let server = Self { dir, bin, port };
        server.chown();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        let options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key -c fsync=off",
            dir = server.dir.display()
        );
        server.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-l",
                &format!("{}/log", server.dir.display()),
                "start",
            ],
        );
        server
    }

    fn as_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
    }

    fn chown(&self) {
        if Self::as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:", self.dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success());
            let key = self.dir.join("server.key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bin.join(program);
        let output = if Self::as_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&binary)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&binary).args(args).output()
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn url(&self, host: &str, options: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/omsc_tls?{options}",
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = std::panic::catch_unwind(|| {
            self.run(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
            );
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn migrate(url: &str) -> Result<(), String> {
    runtime::db::migrate(url)
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn postgresql_over_tls_checks_the_chain_and_the_host_name_as_asked() {
    let dir = scratch_dir("pg-certs");
    let ours = make_certificates(&dir, "our-ca", &["localhost", "127.0.0.1"]);
    let theirs = make_certificates(&dir, "another-ca", &["localhost"]);
    let server = PgServer::start(&ours);
    let ca = ours.ca.display().to_string();

    migrate(&server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect("verify-full against our CA and the right name");
    migrate(&server.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect("the certificate names the address too");

    let wrong_ca = migrate(&server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", theirs.ca.display()),
    ))
    .await
    .unwrap_err();
    assert!(
        wrong_ca.contains("UnknownIssuer") || wrong_ca.contains("invalid peer certificate"),
        "{wrong_ca}"
    );

    // A certificate for another name: verify-full refuses it, verify-ca accepts it.
    let other = make_certificates(&dir, "other-ca", &["db.internal.example"]);
    drop(server);
    let server = PgServer::start(&other);
    let ca = other.ca.display().to_string();
    let wrong_name = migrate(&server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap_err();
    assert!(
        wrong_name.contains("NotValidForName") || wrong_name.contains("not valid for name"),
        "{wrong_name}"
    );
    migrate(&server.url("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca checks the chain only");
    migrate(&server.url("localhost", "sslmode=require"))
        .await
        .expect("require encrypts without checking");

    // Every session of a worker is encrypted: the server says so.
    let env = TestEnv::new().await;
    let url = server.url("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let worker = env
        .start_worker_with(&[&format!("--database-url={url}")])
        .await;
    let admin = runtime::db::connect(&url, "omsc-test").await.unwrap();
    let (sessions, encrypted): (i64, i64) = {
        let row = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl)
                   FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.application_name = 'omsc'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        sessions > 0 && sessions == encrypted,
        "{encrypted} of {sessions} sessions encrypted"
    );
    worker.stop().await;
    env.teardown().await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Terminates TLS in front of the local broker.
async fn tls_front(certificates: &Certificates, upstream: SocketAddr) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(&certificates.server_cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&certificates.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn the_broker_over_tls_works_with_the_ca_and_is_refused_without_it() {
    let dir = scratch_dir("amqp-certs");
    let certificates = make_certificates(&dir, "broker-ca", &["localhost"]);
    let front = tls_front(&certificates, "127.0.0.1:5672".parse().unwrap()).await;
    let env = TestEnv::new().await;

    let untrusted = format!("amqps://guest:guest@localhost:{}/%2f", front.port());
    let err = runtime::amqp::connect(&untrusted, "omsc-test")
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("UnknownIssuer") || err.contains("invalid peer certificate"),
        "{err}"
    );

    let trusted = format!("{untrusted}?cacertfile={}", certificates.ca.display());
    let worker = env
        .start_worker_with(&[&format!("--amqp-url={trusted}")])
        .await;
    let publisher = env.publisher().await;
    let body = simulate::stock::encode(
        &protocol::inventory::StockSnapshot {
            scope: protocol::inventory::StockScope::Aggregate,
            scope_id: "EU".into(),
            mode: protocol::inventory::SnapshotMode::Delta,
            created_on: chrono::Utc::now(),
            stock: vec![protocol::inventory::StockEntry {
                sku: "over-tls".into(),
                quantity: 3,
                unlimited: false,
                inflight_backorders: None,
            }],
            batch: None,
        },
        "tls-1",
    );
    publisher
        .publish_raw(
            "magento.inventory.aggregate_stock_management.updated",
            &body,
        )
        .await
        .unwrap();
    wait_until("the message consumed over TLS", PATIENCE, || async {
        env.sku("EU", "over-tls").await == Some((3, false))
    })
    .await;
    assert_eq!(http_get(worker.http, "/readyz").await.0, 200);
    worker.stop().await;
    env.teardown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
