//! What noded needs from its node, checked at start and every minute: the runtime answers and
//! is ready, CRIU is there, the runtime restores checkpoints, the checkpoint directory is
//! writable, and CRIU may dump established TCP connections. Reported by `/readyz`, metrics and a log line whenever the answer changes.
//!
//! How each runtime's settings can be told is its profile's knowledge
//! ([`checkpointing::runtime`]), asked through the [`Runtime`] trait, so that [`check`] runs
//! against the fake runtime in tests; [`keep_checked`] learns the node's CRIU from the node
//! setup's report or noded's PATH ([`node_criu`]) and turns the answers into checks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use checkpointing::admin::Readiness;
use checkpointing::cri::{CriError, Runtime, api};
use checkpointing::criu;
use checkpointing::runtime::{self, Finding, Verdict};
use k8s_openapi::jiff::Timestamp;

use crate::error::error_chain;
use crate::metrics::{Metrics, RuntimeInfo};
use crate::setup::report::{NodeCriu, SetupReport};

/// How often the prerequisites are checked again.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Bound of each probe (CRI call, CRI-O HTTP request, `criu --version`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub const CRI: &str = "cri";
pub const CRIU: &str = "criu";
pub const RESTORE: &str = "restore";
pub const CHECKPOINT_DIR: &str = "checkpoint_dir";
/// Pod-level CRI CheckpointPod and RestorePod (Kubernetes 1.37): reported, not required.
pub const POD_LEVEL: &str = "pod_level";
/// `tcp-close` in the node's `/etc/criu/runc.conf`: reported, not required.
pub const TCP_CLOSE: &str = "tcp_close";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub state: Verdict,
    /// Why, in words.
    pub detail: String,
}

impl Check {
    fn found(name: &'static str, finding: Finding) -> Self {
        Self::new(name, finding.verdict, finding.detail)
    }

    fn new(name: &'static str, state: Verdict, detail: impl Into<String>) -> Self {
        Self {
            name,
            state,
            detail: detail.into(),
        }
    }
}

/// One round of checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub runtime_name: Option<String>,
    pub runtime_version: Option<String>,
    pub criu_version: Option<String>,
    /// `cri`, `criu`, `restore`, `checkpoint_dir`, `pod_level`, `tcp_close`, in that order
    /// (without `pod_level` when the runtime does not answer).
    pub checks: Vec<Check>,
}

impl Report {
    pub fn state(&self, name: &str) -> Option<Verdict> {
        self.checks.iter().find(|c| c.name == name).map(|c| c.state)
    }

    /// Ready to take checkpoints: the runtime answers and is ready, and archives can be
    /// written. CRIU and restore problems are reported but fail each request with its own
    /// message instead.
    pub fn ready(&self) -> bool {
        self.state(CRI) == Some(Verdict::Ok) && self.state(CHECKPOINT_DIR) == Some(Verdict::Ok)
    }

    /// Why this node can restore no checkpoint at all (the per-container restore failed its
    /// check and the runtime serves no `RestorePod`), if so.
    pub fn cannot_restore(&self) -> Option<String> {
        let check = |name| self.checks.iter().find(|c| c.name == name);
        let restore = check(RESTORE).filter(|c| !c.state.met())?;
        let pod_level = check(POD_LEVEL).is_some_and(|c| c.state == Verdict::Ok);
        (!pod_level).then(|| restore.detail.clone())
    }

    /// `/readyz`'s body: one line per check.
    pub fn body(&self) -> String {
        let mut body = String::from(if self.ready() {
            "ready\n"
        } else {
            "not ready\n"
        });
        for c in &self.checks {
            body.push_str(&format!("{}: {} ({})\n", c.name, c.state, c.detail));
        }
        body
    }

    /// Replaces the prerequisite gauges and runtime info in `metrics` with this report's.
    pub fn record(&self, metrics: &Metrics) {
        metrics.prerequisites(
            self.checks.iter().map(|c| (c.name, c.state.met())),
            RuntimeInfo {
                name: self.runtime_name.as_deref().unwrap_or_default(),
                version: self.runtime_version.as_deref().unwrap_or_default(),
                criu_version: self.criu_version.as_deref().unwrap_or_default(),
            },
        );
    }

    fn detail(&self, name: &str) -> &str {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map_or("", |c| c.detail.as_str())
    }

    fn log(&self) {
        let state = |name| {
            self.state(name)
                .map_or("unknown".to_owned(), |s| s.to_string())
        };
        tracing::info!(
            ready = self.ready(),
            runtime = self.runtime_name.as_deref().unwrap_or(""),
            runtime_version = self.runtime_version.as_deref().unwrap_or(""),
            criu_version = self.criu_version.as_deref().unwrap_or(""),
            cri = %state(CRI),
            cri_detail = self.detail(CRI),
            criu = %state(CRIU),
            criu_detail = self.detail(CRIU),
            restore = %state(RESTORE),
            restore_detail = self.detail(RESTORE),
            checkpoint_dir = %state(CHECKPOINT_DIR),
            checkpoint_dir_detail = self.detail(CHECKPOINT_DIR),
            pod_level = %state(POD_LEVEL),
            pod_level_detail = self.detail(POD_LEVEL),
            tcp_close = %state(TCP_CLOSE),
            tcp_close_detail = self.detail(TCP_CLOSE),
            "prerequisites"
        );
    }
}

/// Creates and removes a file in `dir`.
async fn dir_check(dir: &Path) -> Check {
    let probe = dir.join(format!(".noded-write-check-{}", std::process::id()));
    let write = async {
        tokio::fs::write(&probe, b"ok").await?;
        tokio::fs::remove_file(&probe).await
    };
    match write.await {
        Ok(()) => Check::new(
            CHECKPOINT_DIR,
            Verdict::Ok,
            format!("{} writable", dir.display()),
        ),
        Err(e) => {
            let _ = tokio::fs::remove_file(&probe).await;
            Check::new(
                CHECKPOINT_DIR,
                Verdict::Failed,
                format!("writing a file in {}: {e}", dir.display()),
            )
        }
    }
}

/// What probing one CRI method found: served, not served (UNIMPLEMENTED), or no telling why.
pub type Served = Result<bool, String>;

/// Whether the runtime serves a method, from its answer to a request it must refuse: a
/// runtime that serves it says the request is wrong; one that does not says UNIMPLEMENTED.
pub fn served<T>(answer: Result<T, CriError>) -> Served {
    match answer {
        Ok(_) => Ok(true),
        Err(CriError::Unimplemented { .. }) => Ok(false),
        // Unreachable, busy or too slow: the answer says nothing about the method.
        Err(e) if e.is_transient() => Err(error_chain(&e)),
        Err(_) => Ok(true),
    }
}

/// The pod-level check: Ok when the runtime serves both CheckpointPod and RestorePod.
pub fn pod_level(checkpoint: Served, restore: Served) -> Check {
    match (checkpoint, restore) {
        (Ok(true), Ok(true)) => Check::new(
            POD_LEVEL,
            Verdict::Ok,
            "CRI CheckpointPod and RestorePod served",
        ),
        (Err(why), _) | (_, Err(why)) => Check::new(
            POD_LEVEL,
            Verdict::Failed,
            format!("probing CRI CheckpointPod and RestorePod: {why}"),
        ),
        (checkpoint, restore) => {
            let missing: Vec<&str> = [("CheckpointPod", checkpoint), ("RestorePod", restore)]
                .into_iter()
                .filter(|(_, served)| *served != Ok(true))
                .map(|(name, _)| name)
                .collect();
            Check::new(
                POD_LEVEL,
                Verdict::Failed,
                format!(
                    "the runtime does not serve CRI {} (Kubernetes 1.37): pods are checkpointed \
                     and restored container by container",
                    missing.join(" or ")
                ),
            )
        }
    }
}

/// Probes CheckpointPod and RestorePod with empty requests, which no runtime can carry out.
async fn pod_level_probe<R: Runtime>(runtime: &R) -> Check {
    let checkpoint = runtime
        .checkpoint_pod(api::CheckpointPodRequest::default(), PROBE_TIMEOUT)
        .await;
    let restore = runtime
        .restore_pod(api::RestorePodRequest::default(), PROBE_TIMEOUT)
        .await;
    pod_level(served(checkpoint), served(restore))
}

/// Whether CRI `Status`'s `conditions` say the runtime is ready.
pub fn runtime_ready(conditions: &[api::RuntimeCondition]) -> Result<(), String> {
    match conditions.iter().find(|c| c.r#type == "RuntimeReady") {
        Some(c) if c.status => Ok(()),
        Some(c) => Err(format!("runtime not ready: {} {}", c.reason, c.message)),
        None => Err("the runtime's Status has no RuntimeReady condition".into()),
    }
}

/// Where noded looks at the node: the checkpoint directory and CRIU's configuration for runc.
#[derive(Clone, Debug)]
pub struct Paths {
    pub checkpoint_dir: PathBuf,
    /// The node's `/etc/criu/runc.conf`, as mounted here.
    pub criu_runc_config: PathBuf,
}

/// One round of checks against `runtime`, the node's `paths`, and `criu`: the node's CRIU as
/// far as it is known ([`node_criu::known`]).
pub async fn check<R: Runtime>(runtime: &R, criu: Option<NodeCriu>, paths: &Paths) -> Report {
    let dir = &paths.checkpoint_dir;
    let criu_finding = node_criu::finding(criu.as_ref());
    let mut report = Report {
        criu_version: node_criu::version(criu.as_ref()),
        ..Report::default()
    };
    let version = match runtime.version().await {
        Ok(v) => v,
        Err(e) => {
            let why = error_chain(&e);
            report.checks = vec![
                Check::new(CRI, Verdict::Failed, why),
                Check::found(CRIU, criu_finding),
                Check::new(RESTORE, Verdict::Failed, "the runtime does not answer"),
                dir_check(dir).await,
                tcp::tcp_close(&paths.criu_runc_config).await,
            ];
            return report;
        }
    };
    report.runtime_name = Some(version.runtime_name.clone());
    report.runtime_version = Some(version.runtime_version.clone());
    let settings = runtime::settings(runtime, &version, &criu_finding, PROBE_TIMEOUT).await;
    let about = format!(
        "{} {}{}",
        version.runtime_name, version.runtime_version, settings.about
    );
    let ready = match runtime.conditions(PROBE_TIMEOUT).await {
        Ok(conditions) => runtime_ready(&conditions),
        Err(e) => Err(error_chain(&e)),
    };
    let cri_check = match ready {
        Ok(()) => Check::new(CRI, Verdict::Ok, format!("{about}, RuntimeReady")),
        Err(why) => Check::new(CRI, Verdict::Failed, format!("{about}: {why}")),
    };
    report.checks = vec![
        cri_check,
        Check::found(CRIU, settings.criu),
        Check::found(RESTORE, settings.restore),
        dir_check(dir).await,
        pod_level_probe(runtime).await,
        tcp::tcp_close(&paths.criu_runc_config).await,
    ];
    report
}

/// The latest report, shared with the admin port, the reconciler and the Lease.
#[derive(Debug, Default)]
pub struct Prerequisites {
    /// The latest report and when it was checked.
    latest: RwLock<Option<(Report, Timestamp)>>,
    /// Signalled when the report changes: the Lease tells at once what the node can do.
    changed: tokio::sync::Notify,
}

/// `/readyz`: ready when the last check found the runtime ready and the checkpoint directory
/// writable; the body lists every check.
impl Readiness for Prerequisites {
    fn readiness(&self) -> (bool, String) {
        match self.latest() {
            None => (false, "prerequisites not checked yet\n".into()),
            Some(report) => (report.ready(), report.body()),
        }
    }
}

impl Prerequisites {
    pub fn latest(&self) -> Option<Report> {
        self.checked().map(|(report, _)| report)
    }

    /// The latest report and when it was checked (the Lease tells both).
    pub fn checked(&self) -> Option<(Report, Timestamp)> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn criu_version(&self) -> Option<String> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|(r, _)| r.criu_version.clone())
    }

    /// Stores `report`; true when it differs from the previous one.
    pub fn update(&self, report: Report) -> bool {
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        let changed = latest.as_ref().map(|(r, _)| r) != Some(&report);
        *latest = Some((report, Timestamp::now()));
        if changed {
            // One waiter (the Lease); a change while it renews is kept for its next wait.
            self.changed.notify_one();
        }
        changed
    }

    /// Resolves once the report has changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Checks now and every [`INTERVAL`], logging each change and updating the metrics.
pub async fn keep_checked<R: Runtime>(
    state: Arc<Prerequisites>,
    runtime: R,
    paths: Paths,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let setup = SetupReport::read(&SetupReport::path_in(&paths.checkpoint_dir));
        let criu = node_criu::known(setup, criu::version::on_path(PROBE_TIMEOUT).await);
        let report = check(&runtime, criu, &paths).await;
        report.record(&metrics);
        if state.update(report.clone()) {
            report.log();
        }
    }
}

mod node_criu;
mod tcp;
#[cfg(test)]
mod tests;
