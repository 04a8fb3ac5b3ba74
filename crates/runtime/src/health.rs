//! Liveness and readiness.
//!
//! Liveness (`/healthz`) says the process's loops are turning: each loop beats at least every
//! few seconds, even when idle, and never depends on the broker or the database, so an outage
//! does not make Kubernetes restart healthy workers. Readiness (`/readyz`) says every module
//! is connected and consuming.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loop that has not beaten for this long is considered stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    components: BTreeMap<String, Component>,
}

#[derive(Debug)]
struct Component {
    ready: bool,
    detail: String,
    last_beat: Instant,
}

/// The report behind `/readyz` and `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub lines: Vec<String>,
}

impl Health {
    /// Declares a component (`inventory`, `inventory.nonzero-settler`), not ready yet.
    pub fn register(&self, name: &str) {
        self.lock().components.insert(
            name.to_owned(),
            Component {
                ready: false,
                detail: "starting".into(),
                last_beat: Instant::now(),
            },
        );
    }

    pub fn set(&self, name: &str, ready: bool, detail: impl Into<String>) {
        if let Some(c) = self.lock().components.get_mut(name) {
            c.ready = ready;
            c.detail = detail.into();
            c.last_beat = Instant::now();
        }
    }

    /// Marks the component's loop alive.
    pub fn beat(&self, name: &str) {
        if let Some(c) = self.lock().components.get_mut(name) {
            c.last_beat = Instant::now();
        }
    }

    pub fn readiness(&self) -> Report {
        let state = self.lock();
        let lines: Vec<String> = state
            .components
            .iter()
            .map(|(name, c)| {
                let status = if c.ready { "ready" } else { "not ready" };
                format!("{name}: {status} ({})", c.detail)
            })
            .collect();
        Report {
            ok: !state.components.is_empty() && state.components.values().all(|c| c.ready),
            lines,
        }
    }

    pub fn liveness(&self) -> Report {
        let state = self.lock();
        let now = Instant::now();
        let mut ok = true;
        let lines = state
            .components
            .iter()
            .map(|(name, c)| {
                let quiet = now.duration_since(c.last_beat);
                if quiet > STUCK_AFTER {
                    ok = false;
                    format!("{name}: stuck (no progress for {}s)", quiet.as_secs())
                } else {
                    format!("{name}: alive")
                }
            })
            .collect();
        Report { ok, lines }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let health = Health::default();
        assert!(!health.readiness().ok, "no components: not ready");
        health.register("a");
        health.register("b");
        health.set("a", true, "consuming");
        assert!(!health.readiness().ok);
        health.set("b", true, "consuming");
        assert!(health.readiness().ok);
        health.set("a", false, "broker unreachable");
        let report = health.readiness();
        assert!(!report.ok);
        assert!(
            report
                .lines
                .iter()
                .any(|l| l == "a: not ready (broker unreachable)")
        );
        assert!(health.liveness().ok);
    }
}
