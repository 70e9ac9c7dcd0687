//! Drains as the tests drive them: node1 drained of a test's pods, a policy that protects
//! the pods labelled `protect=yes` on eviction, and the migrations the drain started.

use std::process::Output;

use checkpointing::crd::{CheckpointPolicy, PodMigration};
use checkpointing::names::EVICTION_LABEL;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use crate::{Testbed, counter_template, wait_migration};

/// The node the drain tests drain.
pub const NODE: &str = "node1";

/// The label (and value) of the pods [`protect`]'s policy selects.
pub const PROTECT_LABEL: &str = "protect";
pub const PROTECTED: &str = "yes";

/// Uncordons [`NODE`] when the test ends, however it ends: the other tests schedule there.
pub struct Cordoned<'a>(pub &'a Testbed);

impl Drop for Cordoned<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&["uncordon", NODE]);
    }
}

/// `kubectl drain NODE` of the pods `selector` picks (`--pod-selector`), with the flags any
/// drain of a node with bare pods and emptyDirs takes; `timeout` as kubectl reads it (`300s`).
pub fn drain(tb: &Testbed, selector: &str, timeout: &str) -> Output {
    tb.kubectl(&[
        "drain",
        NODE,
        "--ignore-daemonsets",
        "--force",
        "--delete-emptydir-data",
        "--pod-selector",
        selector,
        "--timeout",
        timeout,
    ])
}

/// A workload's pod template: the seed's counter, labelled `drain-test=<ns>` (so a drain can
/// pick this test's pods alone) and `protect=yes` if `protected`, placed on [`NODE`] when it
/// may be (preferred), never on node3 (the fault tests break it).
pub fn template(app: &str, ns: &str, protected: bool) -> Value {
    let mut pod = counter_template(app);
    pod["metadata"]["labels"]["drain-test"] = json!(ns);
    if protected {
        pod["metadata"]["labels"][PROTECT_LABEL] = json!(PROTECTED);
    }
    pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = json!([
        {"weight": 100, "preference": {"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [NODE]}
        ]}}
    ]);
    pod
}

/// `pod` labelled `drain-test=<ns>` (so a drain can pick this test's pods alone) and, if
/// `protected`, `protect=yes` ([`protect`]'s policy selects it).
pub fn labelled(mut pod: Pod, ns: &str, protected: bool) -> Pod {
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert("drain-test".to_owned(), ns.to_owned());
    if protected {
        labels.insert(PROTECT_LABEL.to_owned(), PROTECTED.to_owned());
    }
    pod
}

/// Creates `object` (JSON of a `K`) in `ns`.
pub async fn create<K>(client: &kube::Client, ns: &str, object: Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {object:?}: {e}"));
}

/// The policy that protects the pods labelled `protect=yes` ([`PROTECT_LABEL`]): no schedule,
/// migrate on eviction.
pub async fn protect(client: &kube::Client, ns: &str) {
    create::<CheckpointPolicy>(
        client,
        ns,
        json!({
            "metadata": {"name": "protect"},
            "spec": {"selector": {"matchLabels": {PROTECT_LABEL: PROTECTED}}, "onEviction": "Migrate"},
        }),
    )
    .await;
}

/// The migrations evictions started for `pod`.
pub async fn eviction_migrations(client: &kube::Client, ns: &str, pod: &Pod) -> Vec<PodMigration> {
    let uid = pod.metadata.uid.clone().unwrap();
    let label = format!("{EVICTION_LABEL}={uid}");
    Api::<PodMigration>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&label))
        .await
        .unwrap()
        .items
}

/// The finished migration the drain started for the pod `pod` was.
pub async fn eviction_migration(client: &kube::Client, ns: &str, pod: &Pod) -> PodMigration {
    let list = eviction_migrations(client, ns, pod).await;
    let [m] = &list[..] else {
        panic!("one migration for {:?}: {list:?}", pod.metadata.name);
    };
    wait_migration(client, ns, m.metadata.name.as_deref().unwrap()).await
}
