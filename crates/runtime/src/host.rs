//! Who this process is, for connection names and worker identities. A leaf: the consume
//! loop and the statistics both name the process, and neither should reach into the other
//! for it.

/// The name of this host: `HOSTNAME` (set in a container), else `/etc/hostname`, else
/// `localhost`.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
