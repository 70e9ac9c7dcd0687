//! How long a request waits on a state that passes by itself (its pod not scheduled or its
//! container not started yet, its node's daemon not live) before it fails: the controller's
//! `--pending-timeout-seconds`, counted from the request's creation. Pure.

use std::time::Duration;

use checkpointing::backoff::MAX_BACKOFF;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A request that waits: its message, and when it looks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub message: String,
    pub next_look: Duration,
}

/// How a request created at `created` that waits for `what` goes on: `None` once it has
/// waited `bound` (it fails).
pub fn wait(what: String, created: Option<&Time>, bound: Duration, now: Timestamp) -> Option<Wait> {
    let next_look = next_look(created, bound, now)?;
    Some(Wait {
        message: format!("waiting: {what}"),
        next_look,
    })
}

/// The shortest wait before looking again.
const FIRST_LOOK: Duration = Duration::from_secs(1);

/// When a request created at `created` that waits on a passing state looks again: `None` once
/// it has waited `bound` (it fails), else after as long as it has waited so far (a backoff
/// that doubles the wait each look, from a second up to the shared cap), and never past the
/// bound. No creation time (not from the API server) counts as created now.
fn next_look(created: Option<&Time>, bound: Duration, now: Timestamp) -> Option<Duration> {
    let waited = created.map_or(Duration::ZERO, |t| {
        Duration::try_from(now.duration_since(t.0)).unwrap_or(Duration::ZERO)
    });
    let left = bound.checked_sub(waited).filter(|left| !left.is_zero())?;
    Some(waited.clamp(FIRST_LOOK, MAX_BACKOFF).min(left))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::now;

    fn ago(secs: u64) -> Option<Time> {
        Some(Time(now() - Duration::from_secs(secs)))
    }

    #[test]
    fn a_waiting_request_looks_again_ever_later_until_the_bound() {
        let bound = Duration::from_secs(300);
        let look = |created: Option<Time>| next_look(created.as_ref(), bound, now());
        let secs = Duration::from_secs;
        assert_eq!(look(None), Some(secs(1)), "just created");
        assert_eq!(look(ago(0)), Some(secs(1)));
        assert_eq!(look(ago(4)), Some(secs(4)));
        assert_eq!(look(ago(100)), Some(secs(100)));
        assert_eq!(look(ago(250)), Some(secs(50)), "never past the bound");
        assert_eq!(look(ago(300)), None, "waited long enough");
        assert_eq!(look(ago(86_400)), None);
        // A creation time ahead of the clock (skew) counts as just created.
        let ahead = Some(Time(now() + Duration::from_secs(30)));
        assert_eq!(look(ahead), Some(secs(1)));
    }

    #[test]
    fn a_long_bound_caps_each_wait() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            next_look(ago(3_600).as_ref(), day, now()),
            Some(MAX_BACKOFF)
        );
    }
}
