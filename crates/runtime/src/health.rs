//! Liveness and readiness.
//!
//! Liveness (`/healthz`) says the process's loops are turning: each loop beats at least every
//! few seconds, even when idle, and never depends on the broker or the database, so an outage
//! does not make Kubernetes restart healthy workers. Readiness (`/readyz`) says every module
//! is connected and consuming, and every background loop is running.
//!
//! A background loop (an outbox relay, the NONZERO settler, the full-export driver, a
//! dead-letter keeper, the statistics flusher) is registered with [`Health::register_loop`]
//! by `Runtime`, which also reports its end: a loop that returned or panicked while the
//! process was not shutting down makes the process not ready, and not alive, with the reason.
//! A loop with a beat period beats at least that often, idle or not; one that has not beaten
//! for [`LATE_AFTER_PERIODS`] periods is reported late (`no beat for 95 s, period 30 s`): not
//! ready, but still alive, since it is waiting on the database or the broker. A loop without
//! a period (a dead-letter keeper, which waits on deliveries for as long as none come) says
//! itself, with [`Health::set`], when it is not ready: while it reconnects to the broker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loop that has not beaten for this long is considered stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// A loop is late after this many of its periods without a beat: one slow round (a broker
/// operation waits up to 15 s) is not yet a stuck loop.
pub const LATE_AFTER_PERIODS: u32 = 3;

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
    pace: Pace,
    /// Why a background loop ended, if it did.
    ended: Option<Ended>,
}

/// How often a component beats.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// A module's consumer, the database watch: stuck after [`STUCK_AFTER`].
    Component,
    /// A background loop that beats at least this often.
    Every(Duration),
    /// A background loop that waits on deliveries as long as none come: only its end counts.
    Unpaced,
}

#[derive(Debug)]
struct Ended {
    reason: String,
    /// It ended while the process was not shutting down.
    unexpectedly: bool,
}

/// A background loop's handle on its component: [`beat`](Self::beat) at least once per period.
#[derive(Debug, Clone)]
pub struct Beat {
    health: Health,
    name: Arc<str>,
}

impl Beat {
    pub fn new(health: Health, name: &str) -> Self {
        Self {
            health,
            name: name.into(),
        }
    }

    pub fn beat(&self) {
        self.health.beat(&self.name);
    }
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
                pace: Pace::Component,
                ended: None,
            },
        );
    }

    /// Declares a background loop, running from now on. With a `period`, the loop must
    /// [`beat`](Self::beat) at least that often; without one (a loop that waits on deliveries
    /// for as long as none come), only its end is watched.
    pub fn register_loop(&self, name: &str, period: Option<Duration>) {
        self.lock().components.insert(
            name.to_owned(),
            Component {
                ready: true,
                detail: "running".into(),
                last_beat: Instant::now(),
                pace: period.map_or(Pace::Unpaced, Pace::Every),
                ended: None,
            },
        );
    }

    /// Records that a background loop ended; `unexpectedly` unless the process is shutting
    /// down, which makes the process neither ready nor alive.
    pub fn ended(&self, name: &str, reason: impl Into<String>, unexpectedly: bool) {
        if let Some(c) = self.lock().components.get_mut(name) {
            c.ready = false;
            c.ended = Some(Ended {
                reason: reason.into(),
                unexpectedly,
            });
        }
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
        self.readiness_at(Instant::now())
    }

    fn readiness_at(&self, now: Instant) -> Report {
        let state = self.lock();
        let mut ok = !state.components.is_empty();
        let lines: Vec<String> = state
            .components
            .iter()
            .map(|(name, c)| {
                let (ready, detail) = match (&c.ended, late(c, now)) {
                    (Some(ended), _) => (false, format!("stopped: {}", ended.reason)),
                    (None, Some(late)) => (false, late),
                    (None, None) => (c.ready, c.detail.clone()),
                };
                ok &= ready;
                let status = if ready { "ready" } else { "not ready" };
                format!("{name}: {status} ({detail})")
            })
            .collect();
        Report { ok, lines }
    }

    pub fn liveness(&self) -> Report {
        self.liveness_at(Instant::now())
    }

    fn liveness_at(&self, now: Instant) -> Report {
        let state = self.lock();
        let mut ok = true;
        let lines = state
            .components
            .iter()
            .map(|(name, c)| {
                let quiet = now.saturating_duration_since(c.last_beat);
                // A background loop that is late is waiting on the database or the broker
                // (a query on a stalled server has no client-side timeout): readiness says
                // so, but a restart would not help, so liveness does not count it.
                let stuck_after = match c.pace {
                    Pace::Component => Some(STUCK_AFTER),
                    Pace::Every(_) | Pace::Unpaced => None,
                };
                match &c.ended {
                    Some(ended) if ended.unexpectedly => {
                        ok = false;
                        format!("{name}: stopped ({})", ended.reason)
                    }
                    // Shutting down: draining is not a reason to be restarted.
                    Some(_) => format!("{name}: alive (stopping)"),
                    None if stuck_after.is_some_and(|after| quiet > after) => {
                        ok = false;
                        format!("{name}: stuck (no progress for {}s)", quiet.as_secs())
                    }
                    None => format!("{name}: alive"),
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

/// Why a loop with a period is late, if it is.
fn late(c: &Component, now: Instant) -> Option<String> {
    let Pace::Every(period) = c.pace else {
        return None;
    };
    let quiet = now.saturating_duration_since(c.last_beat);
    (quiet > period * LATE_AFTER_PERIODS).then(|| {
        format!(
            "no beat for {} s, period {} s",
            quiet.as_secs(),
            period.as_secs_f64()
        )
    })
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

    #[test]
    fn a_loop_that_ended_unexpectedly_makes_the_process_neither_ready_nor_alive() {
        let health = Health::default();
        health.register("sales");
        health.set("sales", true, "consuming");
        health.register_loop("sales outbox relay", Some(Duration::from_secs(30)));
        assert!(health.readiness().ok, "{:?}", health.readiness());
        health.ended("sales outbox relay", "panicked: boom", true);
        let ready = health.readiness();
        assert!(!ready.ok);
        assert!(
            ready
                .lines
                .contains(&"sales outbox relay: not ready (stopped: panicked: boom)".to_owned()),
            "{ready:?}"
        );
        let alive = health.liveness();
        assert!(!alive.ok);
        assert!(
            alive
                .lines
                .contains(&"sales outbox relay: stopped (panicked: boom)".to_owned())
        );
    }

    #[test]
    fn a_loop_that_ends_at_shutdown_is_not_ready_but_alive() {
        let health = Health::default();
        health.register_loop("statistics flusher", Some(Duration::from_secs(60)));
        health.ended("statistics flusher", "shut down", false);
        assert!(!health.readiness().ok);
        assert!(health.liveness().ok, "{:?}", health.liveness());
    }

    #[test]
    fn a_loop_that_misses_its_beats_is_late_then_stuck() {
        let health = Health::default();
        health.register_loop("inventory nonzero settler", Some(Duration::from_secs(30)));
        let start = Instant::now();
        assert!(health.readiness_at(start + Duration::from_secs(89)).ok);
        let late = health.readiness_at(start + Duration::from_secs(95));
        assert!(!late.ok);
        assert_eq!(
            late.lines,
            vec!["inventory nonzero settler: not ready (no beat for 95 s, period 30 s)".to_owned()]
        );
        // Late is not ready; it is still alive (it waits on a server a restart would not fix).
        assert!(health.liveness_at(start + Duration::from_secs(3600)).ok);
        health.beat("inventory nonzero settler");
        assert!(health.readiness().ok);
    }

    #[test]
    fn a_loop_without_a_period_is_only_watched_for_its_end() {
        let health = Health::default();
        health.register_loop("connector.sales dead-letter keeper", None);
        let much_later = Instant::now() + Duration::from_secs(3600);
        assert!(health.readiness_at(much_later).ok);
        assert!(health.liveness_at(much_later).ok);
    }
}
