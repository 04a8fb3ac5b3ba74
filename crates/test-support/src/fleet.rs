//! A fleet of worker processes on one machine: replicas of a module's binary consuming the
//! same queue, started, probed, stopped and replaced the way Kubernetes does it (SIGTERM,
//! wait for the exit, start a new one, wait until it is ready). For the scale-out test and
//! its measurements.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::http::{self, free_address};
use crate::process::{cpu_secs, peak_rss};
use crate::wait::{EVERY, try_wait_until};

/// How long a replica may take to become ready, or to exit after SIGTERM.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One worker process.
pub struct Replica {
    /// `inventory-1`, `inventory-2` … in start order.
    pub name: String,
    pub pid: u32,
    pub http: SocketAddr,
    child: Child,
}

/// What a replica did, read before it stopped (or at the end).
#[derive(Debug, Clone)]
pub struct ReplicaFigures {
    pub name: String,
    /// Messages it handled (every outcome), from its `omsc_messages_total`.
    pub messages: f64,
    /// CPU seconds it used (user + system), from /proc.
    pub cpu_secs: f64,
    /// Its peak resident memory (VmHWM), from /proc.
    pub peak_rss_bytes: u64,
}

/// How a replica ended after SIGTERM.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub figures: ReplicaFigures,
    pub status: ExitStatus,
    /// From SIGTERM to the exit.
    pub drain: Duration,
}

/// Replicas of one binary with one environment.
pub struct Fleet {
    module: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    pub replicas: Vec<Replica>,
    started: usize,
}

impl Fleet {
    /// A fleet of `binary` (e.g. `omsc-inventory`) whose processes get `env` on top of the
    /// inherited environment; `module` names the replicas.
    pub fn new(module: &str, binary: &Path, env: &[(&str, &str)]) -> Self {
        Self {
            module: module.to_owned(),
            binary: binary.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            replicas: Vec::new(),
            started: 0,
        }
    }

    /// Starts `n` replicas and waits until each is ready.
    pub async fn start(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.spawn()?;
        }
        for replica in &self.replicas {
            wait_ready(replica.http).await?;
        }
        Ok(())
    }

    /// Starts one more replica (not waiting for it).
    pub fn spawn(&mut self) -> anyhow::Result<&Replica> {
        self.started += 1;
        let http = free_address()?;
        let mut command = Command::new(&self.binary);
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("OMSC_HTTP_ADDR", http.to_string())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.replicas.push(Replica {
            name: format!("{}-{}", self.module, self.started),
            pid: child.id().unwrap_or_default(),
            http,
            child,
        });
        Ok(self.replicas.last().expect("just pushed"))
    }

    /// Stops the oldest replica as Kubernetes does (SIGTERM, then wait for it to exit) and
    /// returns what it did and how it ended.
    pub async fn terminate_oldest(&mut self) -> anyhow::Result<Stopped> {
        anyhow::ensure!(!self.replicas.is_empty(), "no replica to stop");
        let mut replica = self.replicas.remove(0);
        let before = figures(&replica).await;
        let signalled = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &replica.pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", replica.pid);
        let status = tokio::time::timeout(PATIENCE, replica.child.wait())
            .await
            .with_context(|| format!("{} did not exit after SIGTERM", replica.name))??;
        Ok(Stopped {
            figures: before,
            status,
            drain: signalled.elapsed(),
        })
    }

    /// One step of a rolling restart: SIGTERM the oldest replica, wait for it to exit,
    /// start a new one and wait until it is ready.
    pub async fn replace_oldest(&mut self) -> anyhow::Result<Stopped> {
        let stopped = self.terminate_oldest().await?;
        let http = self.spawn()?.http;
        wait_ready(http).await?;
        Ok(stopped)
    }

    /// Messages handled by the oldest running replica (the next to be replaced).
    pub async fn oldest_messages(&self) -> f64 {
        match self.replicas.first() {
            Some(replica) => messages_handled(replica.http).await.unwrap_or(0.0),
            None => 0.0,
        }
    }

    /// Messages handled by the running replicas, together.
    pub async fn messages(&self) -> f64 {
        let mut total = 0.0;
        for replica in &self.replicas {
            total += messages_handled(replica.http).await.unwrap_or(0.0);
        }
        total
    }

    /// The figures of every running replica.
    pub async fn figures(&self) -> Vec<ReplicaFigures> {
        let mut out = Vec::new();
        for replica in &self.replicas {
            out.push(figures(replica).await);
        }
        out
    }

    /// Stops every replica (SIGTERM, as at the end of a run) and returns how they ended.
    pub async fn stop_all(&mut self) -> anyhow::Result<Vec<Stopped>> {
        let mut out = Vec::new();
        while !self.replicas.is_empty() {
            out.push(self.terminate_oldest().await?);
        }
        Ok(out)
    }
}

async fn figures(replica: &Replica) -> ReplicaFigures {
    ReplicaFigures {
        name: replica.name.clone(),
        messages: messages_handled(replica.http).await.unwrap_or(0.0),
        cpu_secs: cpu_secs(replica.pid).unwrap_or(0.0),
        peak_rss_bytes: peak_rss(replica.pid).unwrap_or(0),
    }
}

/// Waits until a worker's `/readyz` answers 200.
pub async fn wait_ready(http: SocketAddr) -> anyhow::Result<()> {
    try_wait_until(
        &format!("the worker on {http} to be ready"),
        EVERY,
        PATIENCE,
        || async { Ok(probe(http, "/readyz").await.0 == 200) },
    )
    .await
}

/// `omsc_messages_total` of a worker, every label summed; `None` when it does not answer.
pub async fn messages_handled(http: SocketAddr) -> Option<f64> {
    let (status, body) = probe(http, "/metrics").await;
    (status != 0).then(|| {
        body.lines()
            .filter(|l| l.starts_with("omsc_messages_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    })
}

/// A GET that gives up after 5 s: a replica that hangs must not hang the run.
async fn probe(http: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(5), http::get(http, path))
        .await
        .unwrap_or_default()
}
