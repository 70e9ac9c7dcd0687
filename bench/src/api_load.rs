//! API load of section 7: the calls our daemons made in the bench's namespace while the scale
//! section ran (from the apiserver's audit log, see `e2e::audit`), per request. The bench's own
//! calls (creating pods and requests) are not our daemons' and not counted.

use anyhow::ensure;
use e2e::audit::Call;

use crate::report::{Row, Target};
use crate::stats::Summary;

/// The bound: end to end, both daemons together.
const CALLS_PER_REQUEST: f64 = 8.0;

/// Rows per daemon and in total, from settled readings of the log before and after the
/// `requests` requests.
pub fn rows(before: &[Call], after: &[Call], requests: usize) -> anyhow::Result<Vec<Row>> {
    ensure!(
        after.starts_with(before),
        "the audit log lost earlier calls (rotated?) during the scale section"
    );
    ensure!(requests > 0, "no requests to share the calls");
    let during = &after[before.len()..];
    // Which calls they were, for the log: the rows say how many, this says what to cut.
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for c in during {
        *kinds
            .entry(format!("{} {} {}", c.user, c.verb, c.resource))
            .or_default() += 1;
    }
    for (kind, n) in &kinds {
        eprintln!("API calls during the scale section: {n:>6} {kind}");
    }
    let per_request = |user: Option<&str>| {
        let n = during
            .iter()
            .filter(|c| user.is_none_or(|u| c.user == u))
            .count();
        Summary::of(&[n as f64 / requests as f64]).expect("one sample")
    };
    let figure = |who: &str| format!("API calls per request ({requests} requests), {who}");
    Ok(vec![
        Row::alone(
            "7 scale",
            figure("noded"),
            "calls",
            per_request(Some("noded")),
        ),
        Row::alone(
            "7 scale",
            figure("controller"),
            "calls",
            per_request(Some("controller")),
        ),
        Row::alone("7 scale", figure("total"), "calls", per_request(None))
            .with_target(Target::AtMost(CALLS_PER_REQUEST)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(user: &'static str, verb: &str) -> Call {
        Call {
            user,
            verb: verb.to_owned(),
            resource: "containercheckpoints/status".to_owned(),
            name: "many-0".to_owned(),
        }
    }

    #[test]
    fn only_calls_made_in_between_are_shared_among_the_requests() {
        let before = vec![call("noded", "get"); 5];
        let mut after = before.clone();
        after.extend([call("noded", "create"), call("noded", "patch")]);
        after.extend(vec![call("controller", "patch"); 6]);
        let found = rows(&before, &after, 2).unwrap();
        let medians: Vec<f64> = found.iter().map(|r| r.ours.median).collect();
        assert_eq!(medians, [1.0, 3.0, 4.0]);
        assert!(found[2].target.as_ref().unwrap().met);
        assert!(rows(&after, &before, 2).is_err());
    }
}
