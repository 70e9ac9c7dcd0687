//! What noded needs from its node, checked at start and every minute: the runtime answers and
//! is ready, CRIU is there, the runtime restores checkpoints, and the checkpoint directory is
//! writable. Reported by `/readyz`, metrics and a log line whenever the answer changes.
//!
//! CRI-O tells its settings over its socket as plain HTTP (`GET /config`, `GET /info`);
//! containerd tells nothing, so CRIU is the `criu` binary on noded's PATH (noded runs on the
//! node) and the restore setting is assumed from the version.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use checkpointing::cri::{CriClient, Runtime, api};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;

use crate::error::error_chain;
use crate::metrics::{Metrics, RuntimeInfo};

/// How often the prerequisites are checked again.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Bound of each probe (CRI call, CRI-O HTTP request, `criu --version`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub const CRI: &str = "cri";
pub const CRIU: &str = "criu";
pub const RESTORE: &str = "restore";
pub const CHECKPOINT_DIR: &str = "checkpoint_dir";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ok,
    Failed,
    /// Cannot be seen from here; believed met.
    Assumed,
}

impl State {
    /// Met or assumed met.
    pub fn met(self) -> bool {
        self != Self::Failed
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Assumed => "assumed",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub state: State,
    /// Why, in words.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, state: State, detail: impl Into<String>) -> Self {
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
    /// `cri`, `criu`, `restore`, `checkpoint_dir`, in that order.
    pub checks: Vec<Check>,
}

impl Report {
    pub fn state(&self, name: &str) -> Option<State> {
        self.checks.iter().find(|c| c.name == name).map(|c| c.state)
    }

    /// Ready to take checkpoints: the runtime answers and is ready, and archives can be
    /// written. CRIU and restore problems are reported but fail each request with its own
    /// message instead.
    pub fn ready(&self) -> bool {
        self.state(CRI) == Some(State::Ok) && self.state(CHECKPOINT_DIR) == Some(State::Ok)
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
            "prerequisites"
        );
    }
}

/// The version in `criu --version` output (`Version: 4.1`, maybe followed by `GitID: …`).
pub fn parse_criu_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let version = line.trim().strip_prefix("Version:")?.trim();
        (!version.is_empty()).then(|| version.to_owned())
    })
}

/// The two settings of CRI-O's `/config` (TOML) that checkpoint and restore depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrioConfig {
    /// `[crio.runtime] enable_criu_support`.
    pub enable_criu_support: Option<bool>,
    /// `[crio.checkpoint_restore] container_level_enabled`; restore needs
    /// `checkpoint_restore`.
    pub container_level_enabled: Option<String>,
}

/// Reads the two keys from CRI-O's configuration: a line reader of sections and `key = value`
/// lines is enough for them (no arrays or multi-line strings among them).
pub fn parse_crio_config(toml: &str) -> CrioConfig {
    let mut config = CrioConfig::default();
    let mut section = String::new();
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            if !name.starts_with('[') {
                section = name.split(']').next().unwrap_or("").trim().to_owned();
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let value = toml_value(value);
        match (section.as_str(), key) {
            ("crio.runtime", "enable_criu_support") => {
                config.enable_criu_support = value.parse().ok();
            }
            ("crio.checkpoint_restore", "container_level_enabled") => {
                config.container_level_enabled = Some(value);
            }
            _ => {}
        }
    }
    config
}

/// A scalar TOML value without its quotes or trailing comment.
fn toml_value(raw: &str) -> String {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = raw.strip_prefix(quote) {
            return rest.split(quote).next().unwrap_or("").to_owned();
        }
    }
    raw.split('#').next().unwrap_or("").trim().to_owned()
}

/// The restore check for CRI-O's configuration.
pub fn crio_restore(config: &CrioConfig) -> Check {
    match config.container_level_enabled.as_deref() {
        Some("checkpoint_restore") => Check::new(
            RESTORE,
            State::Ok,
            "[crio.checkpoint_restore] container_level_enabled = \"checkpoint_restore\"",
        ),
        Some(other) => Check::new(
            RESTORE,
            State::Failed,
            format!(
                "[crio.checkpoint_restore] container_level_enabled = {other:?}; restoring needs \
                 \"checkpoint_restore\""
            ),
        ),
        None => Check::new(
            RESTORE,
            State::Assumed,
            "CRI-O's /config has no [crio.checkpoint_restore] container_level_enabled; older \
             releases restore when CRIU support is on",
        ),
    }
}

/// The restore check for containerd: restore through CreateContainer exists in 2.1–2.3 (from
/// 2.2.7/2.3.4 behind `enable_experimental_restore_via_create`, which CRI does not show).
pub fn containerd_restore(version: &str) -> Check {
    let mut numbers = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= (2, 4) => Check::new(
            RESTORE,
            State::Failed,
            format!("containerd {version} does not restore through CreateContainer (2.1–2.3 do)"),
        ),
        _ => Check::new(
            RESTORE,
            State::Assumed,
            format!(
                "containerd {version}: restore through CreateContainer assumed (the setting is \
                 not visible over CRI)"
            ),
        ),
    }
}

/// The version of the `criu` binary on PATH, or why there is none.
async fn criu_binary() -> Result<String, String> {
    let run = tokio::task::spawn_blocking(|| {
        std::process::Command::new("criu").arg("--version").output()
    });
    let output = match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Err(_) => return Err("criu --version did not answer".into()),
        Ok(Err(e)) => return Err(format!("running criu --version: {e}")),
        Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no criu binary on PATH".into());
        }
        Ok(Ok(Err(e))) => return Err(format!("running criu --version: {e}")),
        Ok(Ok(Ok(output))) => output,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    match parse_criu_version(&text) {
        Some(v) if output.status.success() => Ok(v),
        _ => Err(format!(
            "criu --version answered {}: {}",
            output.status,
            text.trim()
        )),
    }
}

/// `GET path` over CRI-O's socket, as plain HTTP.
async fn crio_get(socket: &Path, path: &str) -> Result<String, String> {
    let get = async {
        let client: Client<UnixConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(UnixConnector);
        let response = client
            .get(hyperlocal::Uri::new(socket, path).into())
            .await
            .map_err(|e| format!("connecting to {}: {}", socket.display(), error_chain(&e)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, get).await {
        Ok(result) => result.map_err(|e| format!("CRI-O GET {path}: {e}")),
        Err(_) => Err(format!(
            "CRI-O GET {path}: no answer within {PROBE_TIMEOUT:?}"
        )),
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
            State::Ok,
            format!("{} writable", dir.display()),
        ),
        Err(e) => {
            let _ = tokio::fs::remove_file(&probe).await;
            Check::new(
                CHECKPOINT_DIR,
                State::Failed,
                format!("writing a file in {}: {e}", dir.display()),
            )
        }
    }
}

/// Whether the runtime reports `RuntimeReady`.
async fn runtime_ready(cri: &CriClient) -> Result<(), String> {
    let mut rt = cri.runtime_service();
    let response = cri
        .call(
            "Status",
            PROBE_TIMEOUT,
            api::StatusRequest { verbose: false },
            |r| rt.status(r),
        )
        .await
        .map_err(|e| error_chain(&e))?;
    let conditions = response.status.map(|s| s.conditions).unwrap_or_default();
    match conditions.iter().find(|c| c.r#type == "RuntimeReady") {
        Some(c) if c.status => Ok(()),
        Some(c) => Err(format!("runtime not ready: {} {}", c.reason, c.message)),
        None => Err("the runtime's Status has no RuntimeReady condition".into()),
    }
}

/// One round of checks against the runtime at `cri` and the directory `dir`.
pub async fn check(cri: &CriClient, dir: &Path) -> Report {
    let mut report = Report::default();
    let binary = criu_binary().await;
    report.criu_version = binary.as_ref().ok().cloned();
    let criu_from_binary = || match &binary {
        Ok(v) => Check::new(CRIU, State::Ok, format!("criu {v} on PATH")),
        Err(why) => Check::new(CRIU, State::Failed, why.clone()),
    };
    let version = match cri.version().await {
        Ok(v) => v,
        Err(e) => {
            let why = error_chain(&e);
            report.checks = vec![
                Check::new(CRI, State::Failed, why),
                criu_from_binary(),
                Check::new(RESTORE, State::Failed, "the runtime does not answer"),
                dir_check(dir).await,
            ];
            return report;
        }
    };
    let runtime = format!("{} {}", version.runtime_name, version.runtime_version);
    report.runtime_name = Some(version.runtime_name.clone());
    report.runtime_version = Some(version.runtime_version.clone());
    let (cri_check, criu, restore) = match version.runtime_name.as_str() {
        "cri-o" => {
            let socket = cri.socket();
            let mut detail = runtime.clone();
            match crio_get(socket, "/info").await {
                Ok(info) => {
                    let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
                    for key in ["storage_driver", "cgroup_driver"] {
                        if let Some(value) = info.get(key).and_then(|v| v.as_str()) {
                            detail.push_str(&format!(", {key} {value}"));
                        }
                    }
                }
                Err(e) => detail.push_str(&format!(" ({e})")),
            }
            let (criu, restore) = match crio_get(socket, "/config").await {
                Ok(toml) => {
                    let config = parse_crio_config(&toml);
                    let criu = match config.enable_criu_support {
                        Some(true) => {
                            Check::new(CRIU, State::Ok, "[crio.runtime] enable_criu_support = true")
                        }
                        Some(false) => Check::new(
                            CRIU,
                            State::Failed,
                            "[crio.runtime] enable_criu_support = false",
                        ),
                        None => Check::new(
                            CRIU,
                            State::Failed,
                            "CRI-O's /config has no [crio.runtime] enable_criu_support",
                        ),
                    };
                    (criu, crio_restore(&config))
                }
                Err(e) => (
                    Check::new(CRIU, State::Failed, e.clone()),
                    Check::new(RESTORE, State::Failed, e),
                ),
            };
            (detail, criu, restore)
        }
        "containerd" => (
            runtime.clone(),
            criu_from_binary(),
            containerd_restore(&version.runtime_version),
        ),
        other => (
            runtime.clone(),
            criu_from_binary(),
            Check::new(
                RESTORE,
                State::Assumed,
                format!("unknown runtime {other:?}: restore assumed"),
            ),
        ),
    };
    let cri_check = match runtime_ready(cri).await {
        Ok(()) => Check::new(CRI, State::Ok, format!("{cri_check}, RuntimeReady")),
        Err(why) => Check::new(CRI, State::Failed, format!("{cri_check}: {why}")),
    };
    report.checks = vec![cri_check, criu, restore, dir_check(dir).await];
    report
}

/// The latest report, shared with the admin port and the reconciler.
#[derive(Debug, Default)]
pub struct Prerequisites {
    latest: RwLock<Option<Report>>,
}

impl Prerequisites {
    pub fn latest(&self) -> Option<Report> {
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
            .and_then(|r| r.criu_version.clone())
    }

    /// Stores `report`; true when it differs from the previous one.
    pub fn update(&self, report: Report) -> bool {
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        let changed = latest.as_ref() != Some(&report);
        *latest = Some(report);
        changed
    }
}

/// Checks now and every [`INTERVAL`], logging each change and updating the metrics.
pub async fn keep_checked(
    state: Arc<Prerequisites>,
    cri: CriClient,
    dir: PathBuf,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let report = check(&cri, &dir).await;
        report.record(&metrics);
        if state.update(report.clone()) {
            report.log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_version_is_read_from_its_output() {
        assert_eq!(parse_criu_version("Version: 4.1\n").as_deref(), Some("4.1"));
        assert_eq!(
            parse_criu_version("Version: 3.19\nGitID: v3.19-8-g1d2e3f\n").as_deref(),
            Some("3.19")
        );
        assert_eq!(parse_criu_version("criu: command not found\n"), None);
        assert_eq!(parse_criu_version("Version:\n"), None);
    }

    const CRIO_CONFIG: &str = r#"
[crio]
  root = "/var/lib/containers/storage"
  [crio.api]
    listen = "/var/run/crio/crio.sock"
  [crio.runtime]
    default_runtime = "crun"
    # enable_criu_support = false
    enable_criu_support = true
    default_capabilities = [
      "CHOWN",
    ]
  [crio.image]
    pause_image = "registry.k8s.io/pause:3.10"
  [crio.checkpoint_restore]
    container_level_enabled = "checkpoint_restore" # both
  [[crio.runtime.runtimes]]
    enable_criu_support = false
"#;

    #[test]
    fn crio_config_yields_the_two_keys_of_their_sections() {
        let config = parse_crio_config(CRIO_CONFIG);
        assert_eq!(
            config,
            CrioConfig {
                enable_criu_support: Some(true),
                container_level_enabled: Some("checkpoint_restore".into()),
            }
        );
        assert_eq!(crio_restore(&config).state, State::Ok);

        let checkpoint_only = parse_crio_config(
            "[crio.runtime]\nenable_criu_support = false\n[crio.checkpoint_restore]\n\
             container_level_enabled = 'checkpoint'\n",
        );
        assert_eq!(checkpoint_only.enable_criu_support, Some(false));
        assert_eq!(crio_restore(&checkpoint_only).state, State::Failed);

        // Same keys in other sections do not count.
        let elsewhere = parse_crio_config("[crio]\nenable_criu_support = true\n");
        assert_eq!(elsewhere, CrioConfig::default());
        assert_eq!(crio_restore(&elsewhere).state, State::Assumed);
    }

    #[test]
    fn containerd_restore_is_assumed_before_2_4() {
        assert_eq!(containerd_restore("v2.1.4").state, State::Assumed);
        assert_eq!(containerd_restore("2.3.4").state, State::Assumed);
        assert_eq!(containerd_restore("v2.4.0").state, State::Failed);
        assert_eq!(containerd_restore("devel").state, State::Assumed);
    }

    fn report(cri: State, criu: State, restore: State, dir: State) -> Report {
        Report {
            checks: vec![
                Check::new(CRI, cri, "c"),
                Check::new(CRIU, criu, "u"),
                Check::new(RESTORE, restore, "r"),
                Check::new(CHECKPOINT_DIR, dir, "d"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn ready_needs_the_runtime_and_a_writable_directory_only() {
        use State::*;
        assert!(report(Ok, Ok, Ok, Ok).ready());
        assert!(report(Ok, Failed, Failed, Ok).ready());
        assert!(report(Ok, Ok, Assumed, Ok).ready());
        assert!(!report(Failed, Ok, Ok, Ok).ready());
        assert!(!report(Ok, Ok, Ok, Failed).ready());
        assert!(!Report::default().ready());
        let body = report(Ok, Failed, Assumed, Failed).body();
        assert_eq!(
            body,
            "not ready\ncri: ok (c)\ncriu: failed (u)\nrestore: assumed (r)\ncheckpoint_dir: failed (d)\n"
        );
    }

    #[tokio::test]
    async fn the_checkpoint_directory_must_take_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = dir_check(tmp.path()).await;
        assert_eq!(ok.state, State::Ok);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        let missing = dir_check(&tmp.path().join("absent")).await;
        assert_eq!(missing.state, State::Failed);
        assert!(missing.detail.contains("absent"), "{}", missing.detail);
    }

    #[test]
    fn changes_are_noticed() {
        let state = Prerequisites::default();
        assert!(state.update(report(State::Ok, State::Ok, State::Ok, State::Ok)));
        assert!(!state.update(report(State::Ok, State::Ok, State::Ok, State::Ok)));
        assert!(state.update(report(State::Failed, State::Ok, State::Ok, State::Ok)));
    }

    #[tokio::test]
    async fn crio_settings_are_read_over_its_socket_as_plain_http() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("crio.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let app = axum::Router::new()
            .route("/config", axum::routing::get(|| async { CRIO_CONFIG }))
            .route(
                "/info",
                axum::routing::get(|| async { r#"{"cgroup_driver":"systemd"}"# }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let config = crio_get(&socket, "/config").await.unwrap();
        assert_eq!(
            parse_crio_config(&config)
                .container_level_enabled
                .as_deref(),
            Some("checkpoint_restore")
        );
        assert!(
            crio_get(&socket, "/info")
                .await
                .unwrap()
                .contains("systemd")
        );
        let missing = crio_get(&socket, "/nope").await.unwrap_err();
        assert_eq!(missing, "CRI-O GET /nope: answered 404 Not Found");
        server.abort();
        let gone = crio_get(&tmp.path().join("absent.sock"), "/info")
            .await
            .unwrap_err();
        assert!(gone.contains("connecting to"), "{gone}");
    }
}
