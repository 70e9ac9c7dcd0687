//! The pod loop: every ~2 s and on every watch event, one sync per pod of this node (never two
//! at once for the same pod): observe the runtime, plan, carry the plan out, report the status.
//! Also removes sandboxes whose pod no longer exists (force-deleted pods).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::pod::{self, Action, Downward, Observed, PodFailures, Settings, Step};
use crate::runtime::{Cri, LabelledSandbox};
use crate::status::{self, PodFacts};

const SYNC_EVERY: Duration = Duration::from_secs(2);
const GC_EVERY: Duration = Duration::from_secs(30);
const FIELD_MANAGER: &str = "kubelet-standin";

/// Watches the pods bound to `node_name` into `writer`; pokes `wake` on every change.
pub async fn watch_pods(
    client: kube::Client,
    node_name: String,
    writer: reflector::store::Writer<Pod>,
    wake: mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut events = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(pod) => {
                debug!(
                    pod = pod.metadata.name.as_deref().unwrap_or_default(),
                    "pod event"
                );
                // A full channel already holds a wake-up: nothing lost.
                let _ = wake.try_send(());
            }
            Err(e) => warn!(error = %e, "pod watch failed; retrying"),
        }
    }
    anyhow::bail!("the pod watch ended")
}

/// Sandboxes whose pod UID is not among `known` (the store's pods): candidates for removal.
pub fn orphans<'a>(
    sandboxes: &'a [LabelledSandbox],
    known: &HashSet<String>,
) -> Vec<&'a LabelledSandbox> {
    sandboxes
        .iter()
        .filter(|s| !known.contains(&s.uid))
        .collect()
}

/// Directories a pod's cgroupfs parent leaves behind, for cgroup v1 (one per controller) and v2.
/// Nothing for a parent that could climb out of the cgroup mount.
pub fn cgroup_dirs(cgroup_mount: &Path, controllers: &[String], parent: &str) -> Vec<PathBuf> {
    let relative = parent.trim_start_matches('/');
    if relative.is_empty() || relative.split('/').any(|part| part == ".." || part == ".") {
        return Vec::new();
    }
    std::iter::once(cgroup_mount.join(relative))
        .chain(
            controllers
                .iter()
                .map(|c| cgroup_mount.join(c).join(relative)),
        )
        .collect()
}

pub struct Supervisor {
    pub client: kube::Client,
    pub cri: Cri,
    pub settings: Settings,
    pub pods: Store<Pod>,
    failures: Mutex<HashMap<String, PodFailures>>,
}

impl Supervisor {
    pub fn new(client: kube::Client, cri: Cri, settings: Settings, pods: Store<Pod>) -> Self {
        Self {
            client,
            cri,
            settings,
            pods,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Runs forever: waits for the first full list of pods, then syncs.
    pub async fn run(self: Arc<Self>, mut wake: mpsc::Receiver<()>) -> anyhow::Result<()> {
        self.pods
            .wait_until_ready()
            .await
            .context("the pod store was dropped before its first list")?;
        info!(pods = self.pods.len(), "pod list received; syncing");
        let mut inflight: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut gc: Option<JoinHandle<()>> = None;
        let mut last_gc: Option<Instant> = None;
        let mut ticker = tokio::time::interval(SYNC_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                Some(()) = wake.recv() => {}
            }
            inflight.retain(|_, task| !task.is_finished());
            let pods = self.pods.state();
            let live: HashSet<String> =
                pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            for pod in pods {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                if inflight.contains_key(&uid) {
                    continue;
                }
                let me = Arc::clone(&self);
                inflight.insert(uid, tokio::spawn(async move { me.sync(pod).await }));
            }
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|uid, _| live.contains(uid));
            let gc_idle = gc.as_ref().is_none_or(JoinHandle::is_finished);
            if gc_idle && last_gc.is_none_or(|t| t.elapsed() >= GC_EVERY) {
                last_gc = Some(Instant::now());
                let me = Arc::clone(&self);
                gc = Some(tokio::spawn(async move {
                    if let Err(e) = me.collect_garbage().await {
                        warn!(
                            error = format!("{e:#}"),
                            "sandbox garbage collection failed"
                        );
                    }
                }));
            }
        }
    }

    fn failures_of(&self, uid: &str) -> PodFailures {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    fn with_failures(&self, uid: &str, f: impl FnOnce(&mut PodFailures)) {
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(uid.to_owned()).or_default());
    }

    async fn sync(&self, pod: Arc<Pod>) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        if let Err(e) = self.sync_pod(&pod).await {
            warn!(%namespace, pod = %name, error = format!("{e:#}"), "pod sync failed; will retry");
        }
    }

    async fn observe(&self, pod: &Pod, uid: &str) -> anyhow::Result<Observed> {
        let mut observed = self.cri.observe(uid).await?;
        for image in pod::images_to_check(pod, &observed) {
            let present = self.cri.image_present(&image).await?;
            observed.images.insert(image, present);
        }
        Ok(observed)
    }

    async fn sync_pod(&self, pod: &Pod) -> anyhow::Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pass_start = Instant::now();
        let observed = self.observe(pod, &uid).await?;
        let actions = pod::plan(pod, &observed, &self.failures_of(&uid), Instant::now());
        let observed = if actions.is_empty() {
            observed
        } else {
            debug!(
                pod = pod.metadata.name.as_deref().unwrap_or_default(),
                ?actions,
                "plan"
            );
            if self.execute(pod, &uid, &observed, actions).await? {
                return Ok(());
            }
            self.observe(pod, &uid).await?
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let failures = self.failures_of(&uid);
        let next = status::pod_status(&PodFacts {
            pod,
            observed: &observed,
            failures: &failures,
            settings: &self.settings,
            pass_start,
            now: Timestamp::now(),
        });
        if let Some(mut patch) = status::status_patch(pod.status.as_ref(), &next) {
            // The kubelet's UID precondition: never write onto a new pod of the same name.
            patch["metadata"] = serde_json::json!({ "uid": uid });
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            match api
                .patch_status(name, &patch_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => info!(
                    pod = name,
                    phase = next.phase.as_deref().unwrap_or_default(),
                    "pod status updated"
                ),
                Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                Err(e) => return Err(e).context("writing pod status"),
            }
        }
        Ok(())
    }

    fn record(&self, uid: &str, step: &Step, reason: &str, message: String) {
        warn!(uid, ?step, reason, %message, "pod step failed");
        self.with_failures(uid, |f| f.record(step, reason, message, Instant::now()));
    }

    /// Carries out `actions` in order; returns true once the Pod object is deleted.
    async fn execute(
        &self,
        pod: &Pod,
        uid: &str,
        observed: &Observed,
        actions: Vec<Action>,
    ) -> anyhow::Result<bool> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let mut sandbox: Option<(String, u32, Vec<String>)> = observed
            .ready_sandbox()
            .map(|s| (s.id.clone(), s.attempt, s.ips.clone()));
        let mut failed_pulls: HashSet<String> = HashSet::new();

        // Stops first and together: each may take the whole grace period.
        let (stops, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::StopContainer { .. }));
        let stopped = futures::future::join_all(stops.iter().map(|a| async move {
            match a {
                Action::StopContainer { id, grace_seconds } => {
                    info!(pod = name, container_id = %id, grace_seconds, "stopping container");
                    self.cri.stop_container(id, *grace_seconds).await
                }
                _ => Ok(()),
            }
        }))
        .await;
        for result in stopped {
            result?;
        }

        for action in rest {
            match action {
                Action::RunSandbox { attempt } => {
                    let config = pod::sandbox_config(pod, &self.settings, attempt);
                    if let Err(e) = tokio::fs::create_dir_all(&config.log_directory).await {
                        warn!(dir = %config.log_directory, error = %e, "cannot create the pod log directory");
                    }
                    match self.cri.run_sandbox(config).await {
                        Ok(id) => {
                            info!(pod = name, %namespace, sandbox_id = %id, attempt, "sandbox running");
                            self.with_failures(uid, |f| f.clear(&Step::Sandbox));
                            let ips = self.cri.sandbox_ips(&id).await.unwrap_or_default();
                            sandbox = Some((id, attempt, ips));
                        }
                        Err(e) => {
                            self.record(
                                uid,
                                &Step::Sandbox,
                                "FailedCreatePodSandBox",
                                e.to_string(),
                            );
                            return Ok(false);
                        }
                    }
                }
                Action::PullImage { container, image } => {
                    let attempt = sandbox.as_ref().map_or(0, |s| s.1);
                    let config = pod::sandbox_config(pod, &self.settings, attempt);
                    info!(pod = name, %container, %image, "pulling image");
                    match self.cri.pull_image(&image, &config).await {
                        Ok(image_ref) => info!(pod = name, %image, %image_ref, "image pulled"),
                        Err(e) => {
                            self.record(
                                uid,
                                &Step::Container(container.clone()),
                                "ErrImagePull",
                                e.to_string(),
                            );
                            failed_pulls.insert(container);
                        }
                    }
                }
                Action::CreateContainer { container } => {
                    if failed_pulls.contains(&container) {
                        continue;
                    }
                    let Some((sandbox_id, attempt, ips)) = &sandbox else {
                        continue;
                    };
                    let Some(spec) = pod::containers(pod).iter().find(|c| c.name == container)
                    else {
                        continue;
                    };
                    let step = Step::Container(container.clone());
                    let downward = Downward {
                        pod_ips: if host_network {
                            vec![self.settings.node_ip.clone()]
                        } else {
                            ips.clone()
                        },
                        host_ip: self.settings.node_ip.clone(),
                    };
                    let config = match pod::container_config(pod, spec, &downward) {
                        Ok(c) => c,
                        Err(e) => {
                            self.record(uid, &step, "CreateContainerConfigError", e.0);
                            continue;
                        }
                    };
                    let sandbox_config = pod::sandbox_config(pod, &self.settings, *attempt);
                    let id = match self
                        .cri
                        .create_container(sandbox_id, config, sandbox_config)
                        .await
                    {
                        Ok(id) => id,
                        Err(e) => {
                            self.record(uid, &step, "CreateContainerError", e.to_string());
                            continue;
                        }
                    };
                    info!(pod = name, %container, container_id = %id, image = spec.image.as_deref().unwrap_or_default(), "container created");
                    self.start(uid, name, &container, &id).await;
                }
                Action::StartContainer { container, id } => {
                    self.start(uid, name, &container, &id).await;
                }
                Action::StopContainer { .. } => {}
                Action::StopSandbox { id } => {
                    self.cri.stop_sandbox(&id).await?;
                    info!(pod = name, sandbox_id = %id, "sandbox stopped");
                }
                Action::RemoveSandbox { id } => {
                    self.cri.remove_sandbox(&id).await?;
                    info!(pod = name, sandbox_id = %id, "sandbox removed");
                    remove_pod_cgroups(&pod::cgroup_parent(&self.settings, uid));
                }
                Action::DeletePod => {
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid.to_owned()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match api.delete(name, &params).await {
                        Ok(_) => info!(pod = name, %namespace, "pod deleted"),
                        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                        Err(e) => return Err(e).context("deleting the pod"),
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn start(&self, uid: &str, pod_name: &str, container: &str, id: &str) {
        let step = Step::Container(container.to_owned());
        match self.cri.start_container(id).await {
            Ok(()) => {
                info!(pod = pod_name, container, container_id = %id, "container started");
                self.with_failures(uid, |f| f.clear(&step));
            }
            Err(e) => self.record(uid, &step, "RunContainerError", e.to_string()),
        }
    }

    /// Stops and removes sandboxes whose pod is gone from the API (force-deleted, or deleted
    /// while the stand-in was down). The store may lag, so each candidate is checked by a GET.
    async fn collect_garbage(&self) -> anyhow::Result<()> {
        let sandboxes = self.cri.labelled_sandboxes().await?;
        let known: HashSet<String> = self
            .pods
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        for s in orphans(&sandboxes, &known) {
            if !s.namespace.is_empty() && !s.name.is_empty() {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace);
                let current = api
                    .get_opt(&s.name)
                    .await
                    .context("looking up a sandbox's pod")?;
                let still_ours = current.is_some_and(|p| {
                    p.metadata.uid.as_deref() == Some(s.uid.as_str())
                        && p.spec.and_then(|s| s.node_name).as_deref()
                            == Some(self.settings.node_name.as_str())
                });
                if still_ours {
                    continue;
                }
            }
            info!(sandbox_id = %s.id, namespace = %s.namespace, pod = %s.name, uid = %s.uid,
                "removing the sandbox of a pod that no longer exists");
            self.cri.stop_sandbox(&s.id).await?;
            self.cri.remove_sandbox(&s.id).await?;
            remove_pod_cgroups(&pod::cgroup_parent(&self.settings, &s.uid));
        }
        Ok(())
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

/// Best effort: removes the (empty) cgroup directories of a pod, as the kubelet's cgroup
/// manager does; runc removes the containers' own.
fn remove_pod_cgroups(parent: &str) {
    let mount = Path::new("/sys/fs/cgroup");
    let controllers: Vec<String> = std::fs::read_dir(mount)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for dir in cgroup_dirs(mount, &controllers, parent) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => debug!(dir = %dir.display(), "pod cgroup removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => debug!(dir = %dir.display(), error = %e, "pod cgroup not removed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, uid: &str) -> LabelledSandbox {
        LabelledSandbox {
            id: id.into(),
            namespace: "default".into(),
            name: "p".into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn orphans_are_sandboxes_of_unknown_pods() {
        let sandboxes = vec![sandbox("s1", "u1"), sandbox("s2", "u2")];
        let known = HashSet::from(["u1".to_owned()]);
        let found: Vec<&str> = orphans(&sandboxes, &known)
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(found, ["s2"]);
    }

    #[test]
    fn cgroup_dirs_cover_v1_and_v2() {
        let dirs = cgroup_dirs(
            Path::new("/sys/fs/cgroup"),
            &["memory".into(), "cpu,cpuacct".into()],
            "/ckpt-testbed/node1/podu1",
        );
        assert_eq!(
            dirs,
            [
                PathBuf::from("/sys/fs/cgroup/ckpt-testbed/node1/podu1"),
                PathBuf::from("/sys/fs/cgroup/memory/ckpt-testbed/node1/podu1"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/ckpt-testbed/node1/podu1"),
            ]
        );
        assert!(cgroup_dirs(Path::new("/sys/fs/cgroup"), &[], "/ckpt/pod../../x").is_empty());
        assert!(cgroup_dirs(Path::new("/sys/fs/cgroup"), &[], "/").is_empty());
    }
}
