//! Leader election over a `coordination.k8s.io/v1` Lease, so several controller replicas can
//! run and only one reconciles. The standard protocol (as client-go's `leaderelection`): the
//! holder writes `renewTime` every [`RENEW_PERIOD`]; anyone may take a Lease that is absent,
//! released (no holder) or not renewed for `leaseDurationSeconds`. Every write carries the
//! `resourceVersion` read just before (or is a create), so of two candidates racing for the same
//! Lease the API server lets exactly one win.
//!
//! Expiry compares the holder's `renewTime` with the local clock: the replicas' clocks are
//! assumed to agree to well under [`LEASE_DURATION`] - [`RENEW_DEADLINE`] (NTP does that).
//!
//! A leader that cannot renew for [`RENEW_DEADLINE`] (shorter than the duration, so it stops
//! before anyone else may take over), or that sees another holder, has lost: the caller exits
//! non-zero and the Deployment restarts it as a follower. That is simpler than tearing down and
//! rebuilding the kube-runtime Controller, and as safe.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{info, warn};

/// `leaseDurationSeconds` we write: how long after our last renewal others may take over.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
const RENEW_PERIOD: Duration = Duration::from_secs(5);
/// A leader that has not renewed for this long gives up (before the Lease expires for others).
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a follower (or a leader whose renewal failed) tries again.
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Default name of the Lease (`--leader-election-id`).
pub const DEFAULT_ID: &str = "checkpoint-controller";

/// What to do about the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, holding it.
    Create,
    /// Nobody holds it (released or expired): take it over.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and it has not expired.
    Wait { holder: String },
}

/// The pure decision: `lease` as read (None: absent), `me` our identity, `now` the local clock.
pub fn lease_decision(lease: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == me {
        return Decision::Renew;
    }
    let expiry = spec.and_then(|s| {
        let renewed = s.renew_time.as_ref().or(s.acquire_time.as_ref())?.0;
        let duration = SignedDuration::from_secs(s.lease_duration_seconds?.into());
        renewed.checked_add(duration).ok()
    });
    match expiry {
        // A holder without a renewal time or duration would block everyone forever.
        None => Decision::Acquire,
        Some(expiry) if expiry <= now => Decision::Acquire,
        Some(_) => Decision::Wait {
            holder: holder.to_owned(),
        },
    }
}

/// The Lease as `me` writes it after `decision` (Create, Acquire or Renew).
/// `leaseTransitions` counts every change of holder (a released Lease too), as client-go.
fn next_spec(current: Option<&LeaseSpec>, me: &str, now: Timestamp, renew: bool) -> LeaseSpec {
    let changed_hands = current.is_some_and(|c| c.holder_identity.as_deref() != Some(me));
    let current = current.cloned().unwrap_or_default();
    let transitions = current.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        // Whole seconds, small.
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if renew {
            current.acquire_time.or(Some(MicroTime(now)))
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        // Anyone who may write the Lease may set this: never overflow on it.
        lease_transitions: Some(transitions.saturating_add(i32::from(changed_hands))),
        ..current
    }
}

/// The outcome of one round.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    Leading,
    Following(String),
    /// Someone wrote the Lease between our read and our write: read again.
    Conflict,
}

/// This replica's candidacy for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: String, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name,
            identity,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One read and, when the decision says so, one write.
    async fn round(&self) -> Result<Round, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Timestamp::now();
        let decision = lease_decision(current.as_ref(), &self.identity, now);
        let result = match (&decision, current) {
            (Decision::Wait { holder }, _) => return Ok(Round::Following(holder.clone())),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(next_spec(None, &self.identity, now, false)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Acquire | Decision::Renew, Some(mut lease)) => {
                // `metadata.resourceVersion` stays as read: a replace after someone else's write
                // is refused with 409.
                let renew = decision == Decision::Renew;
                lease.spec = Some(next_spec(lease.spec.as_ref(), &self.identity, now, renew));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(Round::Leading),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::Conflict),
            Err(error) => Err(error),
        }
    }

    /// Returns once this replica holds the Lease (retried every [`RETRY_PERIOD`]).
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.round().await {
                Ok(Round::Leading) => {
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Round::Following(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(lease = %self.name, %holder, "following the leader");
                        last_holder = Some(holder);
                    }
                }
                Ok(Round::Conflict) => {}
                Err(error) => warn!(%error, lease = %self.name, "reading the leader Lease failed"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the Lease while we hold it; returns why we lost it (never returns while leading).
    pub async fn keep(&self) -> anyhow::Error {
        let mut renewed = Instant::now();
        loop {
            let failed = renewed.elapsed() >= RENEW_PERIOD;
            tokio::time::sleep(if failed { RETRY_PERIOD } else { RENEW_PERIOD }).await;
            // A hung call must not keep us leading past the deadline; and a renewal counts from
            // before the call (the renewTime we write is no later).
            let started = Instant::now();
            let left = RENEW_DEADLINE.saturating_sub(renewed.elapsed());
            let round = tokio::time::timeout(left, self.round()).await;
            match round.unwrap_or(Ok(Round::Conflict)) {
                Ok(Round::Leading) => renewed = started,
                Ok(Round::Following(holder)) => {
                    return anyhow::anyhow!("lost the leader Lease {} to {holder}", self.name);
                }
                Ok(Round::Conflict) => {
                    warn!(lease = %self.name, "renewing the leader Lease: no answer or a conflict")
                }
                Err(error) => warn!(%error, lease = %self.name, "renewing the leader Lease failed"),
            }
            if renewed.elapsed() >= RENEW_DEADLINE {
                return anyhow::anyhow!(
                    "could not renew the leader Lease {} for {}s",
                    self.name,
                    RENEW_DEADLINE.as_secs()
                );
            }
        }
    }

    /// Gives the Lease up (clean shutdown) so the next replica need not wait for it to expire:
    /// no holder, `renewTime` now, as client-go's `ReleaseOnCancel`.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        info!(lease = %self.name, "released the leader Lease");
        Ok(())
    }
}

/// `POD_NAME` when set (the Deployment passes it), else `<hostname>_<pid>`: unique per process.
pub fn identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn lease(holder: Option<&str>, renewed: &str, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: Some(MicroTime(at(renewed))),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    const NOW: &str = "2026-01-01T00:00:30Z";

    #[test]
    fn absent_lease_is_created() {
        assert_eq!(lease_decision(None, "me", at(NOW)), Decision::Create);
    }

    #[test]
    fn released_lease_is_acquired() {
        let l = lease(None, "2026-01-01T00:00:29Z", 15);
        assert_eq!(lease_decision(Some(&l), "me", at(NOW)), Decision::Acquire);
        let l = lease(Some(""), "2026-01-01T00:00:29Z", 15);
        assert_eq!(lease_decision(Some(&l), "me", at(NOW)), Decision::Acquire);
    }

    #[test]
    fn own_lease_is_renewed_even_if_expired() {
        let l = lease(Some("me"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(lease_decision(Some(&l), "me", at(NOW)), Decision::Renew);
    }

    #[test]
    fn live_lease_of_another_is_waited_for() {
        let l = lease(Some("other"), "2026-01-01T00:00:20Z", 15);
        assert_eq!(
            lease_decision(Some(&l), "me", at(NOW)),
            Decision::Wait {
                holder: "other".into()
            }
        );
    }

    #[test]
    fn expired_lease_of_another_is_acquired() {
        // Expires exactly now: 00:00:15 + 15 s.
        let l = lease(Some("other"), "2026-01-01T00:00:15Z", 15);
        assert_eq!(lease_decision(Some(&l), "me", at(NOW)), Decision::Acquire);
    }

    #[test]
    fn lease_without_times_is_acquired() {
        let mut l = lease(Some("other"), NOW, 15);
        l.spec.as_mut().unwrap().renew_time = None;
        assert_eq!(lease_decision(Some(&l), "me", at(NOW)), Decision::Acquire);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_acquire_time() {
        let now = at(NOW);
        let first = next_spec(None, "me", now, false);
        assert_eq!(first.holder_identity.as_deref(), Some("me"));
        assert_eq!(first.lease_duration_seconds, Some(15));
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.acquire_time, Some(MicroTime(now)));

        let later = at("2026-01-01T00:00:35Z");
        let renewed = next_spec(Some(&first), "me", later, true);
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(0));

        let taken = next_spec(Some(&renewed), "other", later, false);
        assert_eq!(taken.holder_identity.as_deref(), Some("other"));
        assert_eq!(taken.acquire_time, Some(MicroTime(later)));
        assert_eq!(taken.lease_transitions, Some(1));

        let mut released = taken.clone();
        released.holder_identity = None;
        let again = next_spec(Some(&released), "me", later, false);
        assert_eq!(again.lease_transitions, Some(2));
    }

    #[test]
    fn extreme_lease_values_neither_panic_nor_block() {
        let now = at(NOW);
        let mut worn = next_spec(None, "other", now, false);
        worn.lease_transitions = Some(i32::MAX);
        assert_eq!(
            next_spec(Some(&worn), "me", now, false).lease_transitions,
            Some(i32::MAX)
        );
        // The longest duration (68 years) is waited out; a negative one has lapsed.
        let forever = lease(Some("other"), NOW, i32::MAX);
        assert!(matches!(
            lease_decision(Some(&forever), "me", now),
            Decision::Wait { .. }
        ));
        let lapsed = lease(Some("other"), NOW, i32::MIN);
        assert_eq!(lease_decision(Some(&lapsed), "me", now), Decision::Acquire);
    }
}
