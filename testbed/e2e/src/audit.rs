//! What our two daemons ask of the API server, read from the testbed apiserver's audit log
//! (testbed/files/kubernetes/audit-policy.yaml records their calls, and only theirs). Watches
//! and lists are shared by all requests and not counted; namespaced reads and writes are, and
//! only one namespace is looked at, so work beside it does not count (which also leaves out
//! noded's Lease in the lease namespace).

use std::time::Duration;

use serde_json::Value;

use crate::{Testbed, eventually};

const NODED: &str = "system:serviceaccount:kube-system:checkpoint-noded";
const CONTROLLER: &str = "system:serviceaccount:external-checkpointer-system:checkpoint-controller";

/// One audited call: who (`noded` or `controller`), verb, `resource[/subresource]` and name.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub user: &'static str,
    pub verb: String,
    pub resource: String,
    pub name: String,
}

/// The calls our daemons made in `namespace`, in log order.
pub fn calls(tb: &Testbed, namespace: &str) -> Vec<Call> {
    let log = std::fs::read_to_string(tb.state.join("logs/audit.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .filter(|e| !matches!(e["verb"].as_str(), Some("watch" | "list")))
        .filter_map(|e| {
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
            Some(Call {
                user,
                verb: e["verb"].as_str()?.to_owned(),
                resource,
                name: object["name"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect()
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
