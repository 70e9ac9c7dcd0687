//! What our two daemons ask of the API server, read from the testbed apiserver's audit log
//! (testbed/files/kubernetes/audit-policy.yaml records their calls, and only theirs). Watches
//! and lists are shared by all requests and not counted; namespaced reads and writes are, and
//! only one namespace is looked at, so work beside it does not count (which also leaves out
//! noded's Lease in the lease namespace).
//!
//! The policy writes one event per call once its answer is complete (stage `ResponseComplete`;
//! `RequestReceived` is omitted, watches alone would add `ResponseStarted`), at Metadata level:
//! no bodies, but the answer's status code and both timestamps.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::{Testbed, eventually};

const NODED: &str = "system:serviceaccount:kube-system:checkpoint-noded";
const CONTROLLER: &str = "system:serviceaccount:external-checkpointer-system:checkpoint-controller";

/// One audited call: who (`noded` or `controller`), verb, `resource[/subresource]` and name,
/// and how the apiserver answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub user: &'static str,
    pub verb: String,
    pub resource: String,
    pub name: String,
    /// The answer's HTTP status (`responseStatus.code`, 0 when missing): a call turned away
    /// (429, 5xx) is in the log too, and so is each of the client's tries again.
    pub code: u16,
    /// From the apiserver receiving the call to its answer complete
    /// (`requestReceivedTimestamp` → `stageTimestamp`), queueing in the apiserver included;
    /// `None` when either is missing.
    pub latency: Option<Duration>,
}

/// The calls our daemons made in `namespace`, in log order.
pub fn calls(tb: &Testbed, namespace: &str) -> Vec<Call> {
    let log = std::fs::read_to_string(tb.state.join("logs/audit.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| call(line, namespace))
        .collect()
}

/// The call one line of the log records, if it is one of ours in `namespace` that counts.
fn call(line: &str, namespace: &str) -> Option<Call> {
    let e = serde_json::from_str::<Value>(line).ok()?;
    if e["stage"] != "ResponseComplete"
        || e["objectRef"]["namespace"] != namespace
        || matches!(e["verb"].as_str(), Some("watch" | "list"))
    {
        return None;
    }
    let user = match e["user"]["username"].as_str()? {
        NODED => "noded",
        CONTROLLER => "controller",
        _ => return None,
    };
    let object = &e["objectRef"];
    let mut resource = object["resource"].as_str()?.to_owned();
    if let Some(sub) = object["subresource"].as_str() {
        resource = format!("{resource}/{sub}");
    }
    let at = |field: &str| e[field].as_str()?.parse::<Timestamp>().ok();
    let latency = at("requestReceivedTimestamp")
        .zip(at("stageTimestamp"))
        .and_then(|(received, complete)| complete.duration_since(received).try_into().ok());
    Some(Call {
        user,
        verb: e["verb"].as_str()?.to_owned(),
        resource,
        name: object["name"].as_str().unwrap_or_default().to_owned(),
        code: e["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| c.try_into().ok())
            .unwrap_or_default(),
        latency,
    })
}

/// [`calls`] once they have settled: unchanged over four polls (two seconds), since a
/// request's last calls (its final status, then an Event) come after it is seen final.
pub async fn settled_calls(tb: &Testbed, namespace: &str) -> Vec<Call> {
    let (mut last, mut unchanged) = (Vec::new(), 0);
    eventually(
        "the daemons' calls to settle",
        Duration::from_secs(60),
        || {
            let now = calls(tb, namespace);
            unchanged = if now == last { unchanged + 1 } else { 0 };
            last = now.clone();
            let settled = unchanged >= 4;
            async move { settled.then_some(now) }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as the testbed's apiserver writes it (Metadata level), with `edit` applied.
    fn line(edit: impl FnOnce(&mut Value)) -> String {
        let mut e = serde_json::json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/ns/pods/app",
            "verb": "get",
            "user": {"username": CONTROLLER},
            "objectRef": {"resource": "pods", "namespace": "ns", "name": "app", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2026-12-02T10:00:00.100000Z",
            "stageTimestamp": "2026-12-02T10:00:00.350500Z",
        });
        edit(&mut e);
        e.to_string()
    }

    #[test]
    fn a_call_keeps_who_what_its_answer_and_how_long_it_took() {
        assert_eq!(
            call(&line(|_| {}), "ns"),
            Some(Call {
                user: "controller",
                verb: "get".into(),
                resource: "pods".into(),
                name: "app".into(),
                code: 200,
                latency: Some(Duration::from_micros(250_500)),
            })
        );
        let throttled = call(
            &line(|e| {
                e["user"]["username"] = NODED.into();
                e["verb"] = "patch".into();
                e["objectRef"]["resource"] = "containercheckpoints".into();
                e["objectRef"]["subresource"] = "status".into();
                e["responseStatus"] = serde_json::json!({
                    "metadata": {}, "status": "Failure", "reason": "TooManyRequests", "code": 429
                });
                e.as_object_mut().unwrap().remove("stageTimestamp");
            }),
            "ns",
        )
        .unwrap();
        assert_eq!(
            (throttled.user, throttled.resource.as_str(), throttled.code),
            ("noded", "containercheckpoints/status", 429)
        );
        assert_eq!(throttled.latency, None);
    }

    #[test]
    fn only_our_daemons_reads_and_writes_in_the_namespace_count() {
        let skipped = [
            line(|e| e["objectRef"]["namespace"] = "other".into()),
            line(|e| e["verb"] = "watch".into()),
            line(|e| e["verb"] = "list".into()),
            line(|e| e["stage"] = "ResponseStarted".into()),
            line(|e| e["user"]["username"] = "kubernetes-admin".into()),
            "not json".into(),
        ];
        for l in &skipped {
            assert_eq!(call(l, "ns"), None, "{l}");
        }
    }
}
