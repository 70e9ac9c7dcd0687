//! Retention: bound how many checkpoints pile up per container. A pure [`expired`] picks the
//! requests a policy lets go; the task deletes them through the normal path (request →
//! owner-reference GC → Content → noded's finalizer removes archive and image).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpoint};
use checkpointing::names::{PINNED_ANNOTATION, POD_CHECKPOINT_LABEL};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::Store;

/// Longest `--retention-interval-seconds` (a day): tokio's interval adds the period to an
/// `Instant`, which panics on overflow.
pub const MAX_INTERVAL_SECONDS: u64 = 86_400;

/// Keep, per container (namespace, pod, container), the newest `keep_newest` completed
/// checkpoints and/or those younger than `max_age`. Pinned, failed and unfinished requests are
/// never touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_newest: Option<usize>,
    pub max_age: Option<Duration>,
}

impl Policy {
    pub fn is_active(&self) -> bool {
        self.keep_newest.is_some() || self.max_age.is_some()
    }
}

/// When a checkpoint was taken: its checkpoint time, else when it was requested.
fn taken_at(cc: &ContainerCheckpoint) -> Option<Timestamp> {
    cc.status
        .as_ref()
        .and_then(|s| s.checkpoint_time.as_ref())
        .or(cc.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

fn pinned(cc: &ContainerCheckpoint) -> bool {
    cc.annotations()
        .get(PINNED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// (namespace, pod, container): the unit retention counts in.
type ContainerKey = (String, String, String);

/// The requests `policy` lets go, as (namespace, name, uid).
pub fn expired<'a>(
    requests: impl IntoIterator<Item = &'a ContainerCheckpoint>,
    policy: &Policy,
    now: Timestamp,
) -> Vec<(String, String, String)> {
    let mut per_container: BTreeMap<ContainerKey, Vec<(&ContainerCheckpoint, Timestamp)>> =
        BTreeMap::new();
    for cc in requests {
        let completed =
            cc.status.as_ref().and_then(|s| s.state) == Some(CheckpointState::Completed);
        let Some(at) = taken_at(cc) else { continue };
        // A PodCheckpoint's containers go with it, not one by one.
        let part_of_pod = cc.labels().contains_key(POD_CHECKPOINT_LABEL);
        if completed && !pinned(cc) && !part_of_pod && cc.metadata.deletion_timestamp.is_none() {
            let key = (
                cc.namespace().unwrap_or_default(),
                cc.spec.pod_name.clone(),
                cc.spec.container.clone(),
            );
            per_container.entry(key).or_default().push((cc, at));
        }
    }
    let mut gone = Vec::new();
    for mut group in per_container.into_values() {
        group.sort_by_key(|(_, at)| std::cmp::Reverse(*at)); // newest first
        for (i, (cc, at)) in group.into_iter().enumerate() {
            let too_many = policy.keep_newest.is_some_and(|n| i >= n);
            let too_old = policy
                .max_age
                .is_some_and(|age| now.duration_since(at).unsigned_abs() > age && at < now);
            if too_many || too_old {
                gone.push((
                    cc.namespace().unwrap_or_default(),
                    cc.name_any(),
                    cc.uid().unwrap_or_default(),
                ));
            }
        }
    }
    gone
}

/// Applies `policy` every `interval` until the task is dropped, deciding from `requests`, the
/// controller's store of every request, once `listed` says that store has listed them all.
pub async fn enforce(
    client: kube::Client,
    requests: Store<ContainerCheckpoint>,
    listed: Arc<AtomicBool>,
    policy: Policy,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if !listed.load(Ordering::Relaxed) {
            continue;
        }
        let all = requests.state();
        for (namespace, name, uid) in
            expired(all.iter().map(AsRef::as_ref), &policy, Timestamp::now())
        {
            let api: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &namespace);
            // The UID precondition keeps a re-created request of the same name safe.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&name, &params).await {
                Ok(_) => tracing::info!(%namespace, %name, "retention: deleted checkpoint"),
                Err(error) => {
                    tracing::warn!(%namespace, %name, %error, "retention: deleting failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{now, request};
    use checkpointing::crd::ContainerCheckpointStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cc(
        name: &str,
        container: &str,
        age_s: i64,
        state: CheckpointState,
        pinned: bool,
    ) -> ContainerCheckpoint {
        let mut cc = request();
        cc.metadata.name = Some(name.into());
        cc.spec.container = container.into();
        cc.metadata.uid = Some(format!("uid-{name}"));
        let at = now() - Duration::from_secs(age_s.unsigned_abs());
        cc.metadata.creation_timestamp = Some(Time(at));
        cc.status = Some(ContainerCheckpointStatus {
            state: Some(state),
            checkpoint_time: Some(Time(at)),
            ..Default::default()
        });
        if pinned {
            cc.metadata.annotations =
                Some([(PINNED_ANNOTATION.to_owned(), "true".to_owned())].into());
        }
        cc
    }

    fn names(gone: Vec<(String, String, String)>) -> Vec<String> {
        let mut names: Vec<String> = gone.into_iter().map(|(_, n, _)| n).collect();
        names.sort();
        names
    }

    use CheckpointState::*;

    #[test]
    fn keeps_the_newest_n_per_container() {
        let requests = [
            cc("a1", "a", 10, Completed, false),
            cc("a2", "a", 20, Completed, false),
            cc("a3", "a", 30, Completed, false),
            cc("b1", "b", 40, Completed, false),
        ];
        let policy = Policy {
            keep_newest: Some(2),
            max_age: None,
        };
        assert_eq!(names(expired(&requests, &policy, now())), ["a3"]);
    }

    #[test]
    fn drops_what_is_older_than_the_max_age() {
        let requests = [
            cc("young", "a", 10, Completed, false),
            cc("old", "a", 7200, Completed, false),
        ];
        let policy = Policy {
            keep_newest: None,
            max_age: Some(Duration::from_secs(3600)),
        };
        assert_eq!(names(expired(&requests, &policy, now())), ["old"]);
    }

    #[test]
    fn pinned_failed_running_and_pod_checkpoint_requests_are_kept() {
        let requests = [
            cc("new", "a", 10, Completed, false),
            cc("pinned", "a", 20, Completed, true),
            cc("failed", "a", 30, Failed, false),
            cc("running", "a", 40, Running, false),
            cc("old", "a", 50, Completed, false),
            cc("of-a-pod", "a", 60, Completed, false),
        ];
        let mut requests = requests;
        requests[5].metadata.labels = Some([(POD_CHECKPOINT_LABEL.into(), "pc".into())].into());
        let policy = Policy {
            keep_newest: Some(1),
            max_age: Some(Duration::from_secs(1)),
        };
        assert_eq!(names(expired(&requests, &policy, now())), ["new", "old"]);
    }

    #[test]
    fn extreme_policies_and_times_never_panic() {
        let mut at_the_edges = [
            cc("oldest", "a", 10, Completed, false),
            cc("newest", "a", 20, Completed, false),
        ];
        let edges = [Timestamp::MIN, Timestamp::MAX];
        for (cc, at) in at_the_edges.iter_mut().zip(edges) {
            cc.status.as_mut().unwrap().checkpoint_time = Some(Time(at));
        }
        for (keep_newest, max_age) in [
            (Some(0), Some(Duration::ZERO)),
            (Some(usize::MAX), Some(Duration::MAX)),
        ] {
            let policy = Policy {
                keep_newest,
                max_age,
            };
            for now in [now(), Timestamp::MIN, Timestamp::MAX] {
                expired(&at_the_edges, &policy, now);
            }
        }
        let forever = Policy {
            keep_newest: None,
            max_age: Some(Duration::MAX),
        };
        assert!(expired(&at_the_edges, &forever, Timestamp::MAX).is_empty());
    }

    #[test]
    fn no_policy_keeps_everything() {
        let requests = [cc("a", "a", 99_999, Completed, false)];
        assert!(!Policy::default().is_active());
        assert!(expired(&requests, &Policy::default(), now()).is_empty());
    }

    #[tokio::test]
    async fn deletes_from_the_store_without_listing() {
        let api = checkpointing::testing::FakeApi::default();
        let (store, mut writer) = kube::runtime::reflector::store();
        // Taken in 2025, older than an hour by the real clock the task reads.
        let old = cc("old", "a", 10, Completed, false);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(old));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        let policy = Policy {
            keep_newest: None,
            max_age: Some(Duration::from_secs(3600)),
        };
        // The first round runs at once; the next would wait an hour.
        let listed = Arc::new(AtomicBool::new(true));
        let round = enforce(
            api.client(),
            store,
            listed,
            policy,
            Duration::from_secs(3600),
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), round).await;
        let seen = api.take();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].method, "DELETE");
        assert_eq!(
            seen[0].uri,
            "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/namespaces/default/\
             containercheckpoints/old?"
        );
        assert_eq!(
            seen[0].body.as_ref().unwrap()["preconditions"]["uid"],
            "uid-old"
        );
    }
}
