//! API load of section 7: the calls our daemons made in the bench's namespace while the scale
//! section ran (from the apiserver's audit log, see `e2e::audit`), per request. The bench's own
//! calls (creating pods and requests) are not our daemons' and not counted.
//!
//! The log has every try: a call the apiserver turned away (429 from its priority and fairness,
//! 5xx) and kube's client's try again are two lines. So besides the count of all calls,
//! the rows say how many were turned away, and how many are left without them: a count above
//! the single request's that stays without them is repeated work, not retries.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use e2e::audit::Call;

use crate::report::{Row, Target};
use crate::stats::{Summary, quantile};

/// The bound: end to end, both daemons together.
const CALLS_PER_REQUEST: f64 = 8.0;

/// How the apiserver answered a call, as far as counting tries goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// 429 Too Many Requests: throttled, tried again after `Retry-After`.
    Throttled,
    /// 5xx: the server failed or gave up (a 503 or 504 is tried again too).
    ServerError,
    /// Anything else, success or the call's own failure (404, 409…): a try that counts.
    Answered,
}

fn answer(call: &Call) -> Answer {
    match call.code {
        429 => Answer::Throttled,
        500..=599 => Answer::ServerError,
        _ => Answer::Answered,
    }
}

/// Rows per daemon and in total, from settled readings of the log before and after the
/// `requests` requests.
pub fn rows(before: &[Call], after: &[Call], requests: usize) -> anyhow::Result<Vec<Row>> {
    ensure!(
        after.starts_with(before),
        "the audit log lost earlier calls (rotated?) during the scale section"
    );
    ensure!(requests > 0, "no requests to share the calls");
    let during = &after[before.len()..];
    log_kinds(during);
    let per_request = |user: Option<&str>, answers: &[Answer]| {
        let n = during
            .iter()
            .filter(|c| user.is_none_or(|u| c.user == u))
            .filter(|c| answers.is_empty() || answers.contains(&answer(c)))
            .count();
        Summary::of(&[n as f64 / requests as f64]).expect("one sample")
    };
    let figure = |who: &str| format!("API calls per request ({requests} requests), {who}");
    let row = |who: &str, user, answers: &[Answer]| {
        Row::alone("7 scale", figure(who), "calls", per_request(user, answers))
    };
    let mut rows = vec![
        row("noded", Some("noded"), &[]),
        row("controller", Some("controller"), &[]),
        row("total", None, &[]).with_target(Target::AtMost(CALLS_PER_REQUEST)),
    ];
    for user in ["noded", "controller"] {
        rows.push(row(
            &format!("{user}, answered 429"),
            Some(user),
            &[Answer::Throttled],
        ));
        rows.push(row(
            &format!("{user}, answered 5xx"),
            Some(user),
            &[Answer::ServerError],
        ));
    }
    rows.push(row(
        "first tries only (total less those answered 429 or 5xx)",
        None,
        &[Answer::Answered],
    ));
    Ok(rows)
}

/// Which calls they were, for the log: the rows say how many, this says what to cut, and the
/// apiserver's time on them whether they waited there.
fn log_kinds(during: &[Call]) {
    let mut kinds = BTreeMap::<String, Vec<Option<Duration>>>::new();
    for c in during {
        kinds
            .entry(format!("{} {} {} {}", c.user, c.verb, c.resource, c.code))
            .or_default()
            .push(c.latency);
    }
    for (kind, latencies) in &kinds {
        let mut ms: Vec<f64> = latencies
            .iter()
            .flatten()
            .map(|l| l.as_secs_f64() * 1e3)
            .collect();
        ms.sort_by(f64::total_cmp);
        let took = match (quantile(&ms, 0.5), ms.last()) {
            (Some(p50), Some(max)) => {
                format!(", in the apiserver p50 {p50:.1} ms, max {max:.0} ms")
            }
            _ => String::new(),
        };
        eprintln!(
            "API calls during the scale section: {:>6} {kind}{took}",
            latencies.len()
        );
    }
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
            code: 200,
            latency: Some(Duration::from_millis(3)),
        }
    }

    fn answered(code: u16, c: Call) -> Call {
        Call { code, ..c }
    }

    #[test]
    fn only_calls_made_in_between_are_shared_among_the_requests() {
        let before = vec![call("noded", "get"); 5];
        let mut after = before.clone();
        after.extend([call("noded", "create"), call("noded", "patch")]);
        after.extend(vec![call("controller", "patch"); 6]);
        let found = rows(&before, &after, 2).unwrap();
        let medians: Vec<f64> = found.iter().map(|r| r.ours.median).collect();
        assert_eq!(medians, [1.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 4.0]);
        assert!(found[2].target.as_ref().unwrap().met);
        assert!(rows(&after, &before, 2).is_err());
    }

    #[test]
    fn calls_turned_away_are_counted_apart_and_left_out_of_first_tries() {
        let during = [
            // noded: one status write throttled twice before it went through.
            answered(429, call("noded", "patch")),
            answered(429, call("noded", "patch")),
            call("noded", "patch"),
            // The controller: a read the apiserver failed, one timed out, one 404 (an answer).
            answered(500, call("controller", "get")),
            answered(504, call("controller", "get")),
            answered(404, call("controller", "get")),
            answered(429, call("controller", "patch")),
            call("controller", "patch"),
        ];
        let found = rows(&[], &during, 1).unwrap();
        let by_figure: Vec<(&str, f64)> = found
            .iter()
            .map(|r| (r.figure.as_str(), r.ours.median))
            .collect();
        assert_eq!(
            by_figure,
            [
                ("API calls per request (1 requests), noded", 3.0),
                ("API calls per request (1 requests), controller", 5.0),
                ("API calls per request (1 requests), total", 8.0),
                (
                    "API calls per request (1 requests), noded, answered 429",
                    2.0
                ),
                (
                    "API calls per request (1 requests), noded, answered 5xx",
                    0.0
                ),
                (
                    "API calls per request (1 requests), controller, answered 429",
                    1.0
                ),
                (
                    "API calls per request (1 requests), controller, answered 5xx",
                    2.0
                ),
                (
                    "API calls per request (1 requests), first tries only (total less those \
                     answered 429 or 5xx)",
                    3.0
                ),
            ]
        );
        // The target counts every call; the other rows have none.
        assert!(found[2].target.as_ref().unwrap().met);
        assert!(found.iter().filter(|r| r.target.is_some()).count() == 1);
    }
}
