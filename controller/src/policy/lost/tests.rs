use super::*;
use checkpointing::crd::{
    CheckpointPolicySpec, PodCheckpointSpec, PodCheckpointStatus, RegistrySpec, RetentionSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

const NOW: &str = "2026-12-05T12:00:00Z";
const AFTER: Duration = Duration::from_secs(300);

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn node(name: &str, ready: &str, since: &str, tainted: bool) -> Node {
    let taints = if tainted {
        json!([{"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"taints": taints},
        "status": {"conditions": [
            {"type": "Ready", "status": ready, "lastTransitionTime": since}
        ]},
    }))
    .unwrap()
}

fn policy() -> CheckpointPolicy {
    let mut p = CheckpointPolicy::new(
        "protect",
        CheckpointPolicySpec {
            selector: serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap(),
            schedule: None,
            retention: RetentionSpec::default(),
            registry: None,
            containers: Vec::new(),
            timeout_seconds: None,
            on_eviction: None,
            on_node_loss: Some(OnNodeLoss::Restore),
        },
    );
    p.metadata.namespace = Some("team".into());
    p
}

fn pod(name: &str, node: &str, owner: Option<&str>) -> Pod {
    let owners = owner.map_or(json!([]), |kind| {
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": "web", "uid": "o", "controller": true}])
    });
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"),
                     "ownerReferences": owners},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

fn checkpoint(name: &str, pod: &str, age_s: i64, pushed: bool) -> PodCheckpoint {
    let mut pc = PodCheckpoint::new(
        name,
        PodCheckpointSpec {
            pod_name: pod.into(),
            containers: Vec::new(),
            timeout_seconds: None,
            registry: pushed.then(|| RegistrySpec {
                compression: None,
                repository: Some("registry.team:5443/ckpt".into()),
                secret_ref: None,
            }),
            hold_source: false,
        },
    );
    pc.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_secs(age_s)));
    pc.status = Some(PodCheckpointStatus {
        state: Some(CheckpointState::Completed),
        ..Default::default()
    });
    pc
}

#[test]
fn a_node_is_lost_by_its_taint_at_once_and_by_not_being_ready_after_a_while() {
    let nodes = [
        node("tainted", "Unknown", NOW, true),
        node("silent", "Unknown", "2026-12-05T11:50:00Z", false),
        node("recent", "False", "2026-12-05T11:58:00Z", false),
        node("fine", "True", "2026-12-05T11:00:00Z", false),
    ];
    let (lost, next) = lost_nodes(&nodes.iter().collect::<Vec<_>>(), AFTER, now());
    assert!(lost["tainted"].fenced && lost["tainted"].why.contains(OUT_OF_SERVICE_TAINT));
    assert!(!lost["silent"].fenced && lost["silent"].why.contains("not been Ready"));
    assert!(!lost.contains_key("recent") && !lost.contains_key("fine"));
    assert_eq!(
        next,
        Some("2026-12-05T12:03:00Z".parse().unwrap()),
        "when recent is"
    );
}

#[test]
fn a_lost_nodes_pods_restore_from_their_newest_pushed_checkpoint_once() {
    let policy = policy();
    let lost = BTreeMap::from([(
        "node3".to_owned(),
        Loss {
            why: "node node3 has not been Ready since then".into(),
            fenced: false,
        },
    )]);
    let pods = [
        pod("web-1", "node3", Some("ReplicaSet")),
        pod("db-0", "node3", Some("StatefulSet")),
        pod("bare", "node3", None),
        pod("elsewhere", "node1", None),
    ];
    let checkpoints = [
        checkpoint("old", "web-1", 600, true),
        checkpoint("new", "web-1", 60, true),
        checkpoint("local", "web-1", 10, false),
        checkpoint("db", "db-0", 60, true),
    ];
    let exists = |_: &str| true;
    let mut o = Observed {
        policy: &policy,
        pods: &pods,
        checkpoints: &checkpoints,
        migrations: &[],
        lost: &lost,
        node_exists: &exists,
        now: now(),
    };
    let (start, cannot) = restores(&o);
    let [restore] = &start[..] else {
        panic!("only web-1 restores: {start:?} {cannot:?}");
    };
    let m = &restore.migration;
    assert_eq!(m.spec.pod_name, "web-1");
    assert_eq!(
        m.spec.from_checkpoint.as_deref(),
        Some("new"),
        "the newest pushed one"
    );
    assert_eq!(m.labels()[LOST_POD_LABEL], "uid-web-1");
    assert!(
        restore.note.contains("\"new\"") && restore.note.contains("taken 60s ago"),
        "{}",
        restore.note
    );
    assert_eq!(cannot.len(), 2, "{cannot:?}");
    assert!(cannot[0].contains("StatefulSet pod \"db-0\""), "{cannot:?}");
    assert!(
        cannot[1].contains("no Completed checkpoint of this policy in a registry"),
        "{cannot:?}"
    );

    // Started once: a migration for the pod exists.
    let started = [m.clone()];
    o.migrations = &started;
    assert!(restores(&o).0.is_empty());

    // Fenced (Node deleted), the StatefulSet's pod restores too.
    o.migrations = &[];
    let none = BTreeMap::new();
    o.lost = &none;
    let gone = |n: &str| n != "node3";
    o.node_exists = &gone;
    let (start, _) = restores(&o);
    let names: Vec<&str> = start
        .iter()
        .map(|r| r.migration.spec.pod_name.as_str())
        .collect();
    assert_eq!(names, ["web-1", "db-0"]);
    assert!(start[1].note.contains("node node3 was deleted"));
}
