//! Whether a new pod that names a ReplicaSet or StatefulSet as its controller is that
//! workload's own creation. An owner reference is only a field its creator wrote: a tenant can
//! copy one onto a pod of their own while a migration waits for its replacement, and that pod
//! must not become the restore. Pure: the webhook fetches the owner.

use checkpointing::names::POD_TEMPLATE_HASH_LABEL;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::core::{Selector, SelectorExt};

/// Kinds of workload whose pods migrate by replacement.
pub const WORKLOAD_KINDS: [&str; 2] = ["ReplicaSet", "StatefulSet"];
/// The kube-controller-manager's own identity: what it presents for every controller when it
/// runs without `--use-service-account-credentials`.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// The ReplicaSet controller's identity with `--use-service-account-credentials` (kubeadm's
/// default, and the testbed's).
pub const REPLICASET_CONTROLLER_USER: &str =
    "system:serviceaccount:kube-system:replicaset-controller";
/// The StatefulSet controller's identity, likewise.
pub const STATEFULSET_CONTROLLER_USER: &str =
    "system:serviceaccount:kube-system:statefulset-controller";
/// The StatefulSet controller stamps each pod with the revision it was made from.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// The workload a pod names as its controller, as the API server has it.
#[derive(Debug, Clone)]
pub enum Owner {
    ReplicaSet(Box<ReplicaSet>),
    StatefulSet(Box<StatefulSet>),
}

/// Why a pod is not its workload's own creation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forgery {
    #[error("pod created by {user:?}, not by the {kind} controller")]
    NotTheController { user: String, kind: String },
    #[error("its {kind} {name:?} (uid {uid}) does not exist")]
    NoOwner {
        kind: String,
        name: String,
        uid: String,
    },
    #[error("its labels do not match the selector of {kind} {name:?}")]
    SelectorMismatch { kind: String, name: String },
    #[error("its {label} label does not match {kind} {name:?}")]
    HashMismatch {
        label: &'static str,
        kind: String,
        name: String,
    },
}

/// The pod's controlling owner reference, if it is a ReplicaSet or StatefulSet.
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata.owner_references.iter().flatten().find(|o| {
        o.controller == Some(true)
            && o.api_version == "apps/v1"
            && WORKLOAD_KINDS.contains(&o.kind.as_str())
    })
}

/// Ok when `pod`, created by `user`, is the genuine creation of its controlling workload
/// `owner` (as looked up by the reference's name; `None` when there is none of that name).
pub fn genuine(pod: &Pod, user: &UserInfo, owner: Option<&Owner>) -> Result<(), Forgery> {
    let Some(reference) = controller_of(pod) else {
        return Err(Forgery::NoOwner {
            kind: "workload".into(),
            name: String::new(),
            uid: String::new(),
        });
    };
    let kind = reference.kind.clone();
    let name = reference.name.clone();
    let username = user.username.as_deref().unwrap_or_default();
    let controller = match kind.as_str() {
        "ReplicaSet" => REPLICASET_CONTROLLER_USER,
        _ => STATEFULSET_CONTROLLER_USER,
    };
    if username != controller && username != CONTROLLER_MANAGER_USER {
        return Err(Forgery::NotTheController {
            user: username.to_owned(),
            kind,
        });
    }
    // Same kind, name and uid: a workload recreated under the old name is another owner.
    let (meta, selector) = match owner {
        Some(Owner::ReplicaSet(rs)) if kind == "ReplicaSet" => {
            (&rs.metadata, rs.spec.as_ref().map(|s| s.selector.clone()))
        }
        Some(Owner::StatefulSet(sts)) if kind == "StatefulSet" => {
            (&sts.metadata, sts.spec.as_ref().map(|s| s.selector.clone()))
        }
        _ => (&ObjectMeta::default(), None),
    };
    if meta.uid.as_deref() != Some(reference.uid.as_str())
        || meta.name.as_deref() != Some(name.as_str())
    {
        return Err(Forgery::NoOwner {
            kind,
            name,
            uid: reference.uid.clone(),
        });
    }
    if !selects(selector, pod) {
        return Err(Forgery::SelectorMismatch { kind, name });
    }
    let label = |key: &str| {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
    };
    let hash_matches = match owner {
        // A ReplicaSet outside a Deployment has no hash, and neither have its pods.
        Some(Owner::ReplicaSet(rs)) => {
            label(POD_TEMPLATE_HASH_LABEL)
                == rs
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
                    .cloned()
        }
        Some(Owner::StatefulSet(sts)) => {
            let status = sts.status.as_ref();
            let revisions = [
                status.and_then(|s| s.update_revision.clone()),
                status.and_then(|s| s.current_revision.clone()),
            ];
            label(CONTROLLER_REVISION_HASH)
                .is_some_and(|hash| revisions.iter().flatten().any(|r| *r == hash))
        }
        None => false,
    };
    if !hash_matches {
        return Err(Forgery::HashMismatch {
            label: match owner {
                Some(Owner::StatefulSet(_)) => CONTROLLER_REVISION_HASH,
                _ => POD_TEMPLATE_HASH_LABEL,
            },
            kind,
            name,
        });
    }
    Ok(())
}

/// Whether the workload's selector selects the pod. An empty or unreadable one selects
/// nothing here: apps/v1 refuses both, so such an owner is not what it seems.
fn selects(selector: Option<LabelSelector>, pod: &Pod) -> bool {
    let Some(Ok(selector)) = selector.map(Selector::try_from) else {
        return false;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    !selector.selects_all() && selector.matches(&labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSetSpec, StatefulSetSpec, StatefulSetStatus};
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    fn selector() -> LabelSelector {
        LabelSelector {
            match_labels: labels(&[("app", "web")]),
            ..Default::default()
        }
    }

    fn pod(kind: &str, hash: (&str, &str)) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.labels = labels(&[("app", "web"), hash]);
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "web".into(),
            uid: "uid-web".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        pod
    }

    fn meta(hash: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            uid: Some("uid-web".into()),
            labels: hash.and_then(|h| labels(&[(POD_TEMPLATE_HASH_LABEL, h)])),
            ..Default::default()
        }
    }

    fn replica_set() -> Owner {
        Owner::ReplicaSet(Box::new(ReplicaSet {
            metadata: meta(Some("7d4f")),
            spec: Some(ReplicaSetSpec {
                selector: selector(),
                ..Default::default()
            }),
            status: None,
        }))
    }

    fn stateful_set() -> Owner {
        Owner::StatefulSet(Box::new(StatefulSet {
            metadata: meta(None),
            spec: Some(StatefulSetSpec {
                selector: selector(),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                current_revision: Some("web-old".into()),
                update_revision: Some("web-new".into()),
                ..Default::default()
            }),
        }))
    }

    fn user(name: &str) -> UserInfo {
        UserInfo {
            username: Some(name.into()),
            ..Default::default()
        }
    }

    fn rs_pod() -> Pod {
        pod("ReplicaSet", (POD_TEMPLATE_HASH_LABEL, "7d4f"))
    }

    #[test]
    fn the_controllers_own_pods_are_genuine() {
        let rs = replica_set();
        for who in [REPLICASET_CONTROLLER_USER, CONTROLLER_MANAGER_USER] {
            assert_eq!(genuine(&rs_pod(), &user(who), Some(&rs)), Ok(()), "{who}");
        }
        let sts = stateful_set();
        // Mid-rollout a pod may be of either revision.
        for revision in ["web-old", "web-new"] {
            let pod = pod("StatefulSet", (CONTROLLER_REVISION_HASH, revision));
            for who in [STATEFULSET_CONTROLLER_USER, CONTROLLER_MANAGER_USER] {
                assert_eq!(genuine(&pod, &user(who), Some(&sts)), Ok(()), "{who}");
            }
        }
    }

    #[test]
    fn another_creator_is_a_forgery() {
        let rs = replica_set();
        for who in [
            "alice",
            "system:serviceaccount:tenant:default",
            // The other workload controller is not this one.
            STATEFULSET_CONTROLLER_USER,
            "",
        ] {
            assert!(
                matches!(
                    genuine(&rs_pod(), &user(who), Some(&rs)),
                    Err(Forgery::NotTheController { .. })
                ),
                "{who}"
            );
        }
    }

    #[test]
    fn a_missing_or_other_owner_is_a_forgery() {
        let controller = user(REPLICASET_CONTROLLER_USER);
        let no_owner = |owner: Option<&Owner>| {
            matches!(
                genuine(&rs_pod(), &controller, owner),
                Err(Forgery::NoOwner { .. })
            )
        };
        assert!(no_owner(None));
        // Recreated under the same name: another uid.
        let Owner::ReplicaSet(mut other) = replica_set() else {
            unreachable!()
        };
        other.metadata.uid = Some("uid-new".into());
        assert!(no_owner(Some(&Owner::ReplicaSet(other))));
        // A StatefulSet of the name a ReplicaSet reference names.
        assert!(no_owner(Some(&stateful_set())));
        // No workload reference at all.
        let mut bare = rs_pod();
        bare.metadata.owner_references = None;
        assert!(matches!(
            genuine(&bare, &controller, Some(&replica_set())),
            Err(Forgery::NoOwner { .. })
        ));
    }

    #[test]
    fn labels_the_selector_does_not_match_are_a_forgery() {
        let controller = user(REPLICASET_CONTROLLER_USER);
        let mut pod = rs_pod();
        pod.metadata.labels = labels(&[("app", "db"), (POD_TEMPLATE_HASH_LABEL, "7d4f")]);
        let mismatch = |pod: &Pod, owner: &Owner| {
            matches!(
                genuine(pod, &controller, Some(owner)),
                Err(Forgery::SelectorMismatch { .. })
            )
        };
        assert!(mismatch(&pod, &replica_set()));
        // An empty selector would match anything: apps/v1 has none, so it matches nothing.
        let Owner::ReplicaSet(mut empty) = replica_set() else {
            unreachable!()
        };
        empty.spec.as_mut().unwrap().selector = LabelSelector::default();
        assert!(mismatch(&rs_pod(), &Owner::ReplicaSet(empty)));
    }

    #[test]
    fn another_template_hash_is_a_forgery() {
        let hash_mismatch = |pod: &Pod, who: &str, owner: &Owner| {
            matches!(
                genuine(pod, &user(who), Some(owner)),
                Err(Forgery::HashMismatch { .. })
            )
        };
        let rs = replica_set();
        for hash in [Some("0000"), None] {
            let mut pod = rs_pod();
            let labels = pod.metadata.labels.as_mut().unwrap();
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            if let Some(hash) = hash {
                labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
            }
            assert!(
                hash_mismatch(&pod, REPLICASET_CONTROLLER_USER, &rs),
                "{hash:?}"
            );
        }
        let sts = stateful_set();
        let stale = pod("StatefulSet", (CONTROLLER_REVISION_HASH, "web-older"));
        assert!(hash_mismatch(&stale, STATEFULSET_CONTROLLER_USER, &sts));
        let unlabelled = pod("StatefulSet", ("tier", "front"));
        assert!(hash_mismatch(
            &unlabelled,
            STATEFULSET_CONTROLLER_USER,
            &sts
        ));
    }
}
