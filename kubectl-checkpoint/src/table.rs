//! `list`'s table, laid out like `kubectl get` (and the columns other tables share).

use checkpointing::crd::{CheckpointPolicy, ContainerCheckpoint};
use k8s_openapi::jiff::Timestamp;

const NONE: &str = "<none>";

/// One line of `list`.
#[derive(Debug, PartialEq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub pod: String,
    pub container: String,
    pub state: String,
    pub node: String,
    pub size: String,
    pub age: String,
}

impl Row {
    pub fn new(cc: &ContainerCheckpoint, now: Timestamp) -> Self {
        let status = cc.status.as_ref();
        let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_owned());
        Self {
            namespace: or_none(cc.metadata.namespace.clone()),
            name: or_none(cc.metadata.name.clone()),
            pod: cc.spec.pod_name.clone(),
            container: cc.spec.container.clone(),
            // No status yet: the controller has not seen the request.
            state: status
                .and_then(|s| s.state)
                .map_or("Pending".to_owned(), |s| format!("{s:?}")),
            node: or_none(status.and_then(|s| s.node_name.clone())),
            size: or_none(status.and_then(|s| s.archive_size).map(size)),
            age: or_none(
                cc.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| age(now.as_second() - t.0.as_second())),
            ),
        }
    }
}

/// The rows under a header, columns separated by three spaces; NAMESPACE first if asked.
pub fn render(rows: &[Row], with_namespace: bool) -> String {
    let header = ["NAME", "POD", "CONTAINER", "STATE", "NODE", "SIZE", "AGE"];
    let mut lines: Vec<Vec<&str>> = vec![header.to_vec()];
    lines.extend(rows.iter().map(|r| {
        vec![
            &*r.name,
            &*r.pod,
            &*r.container,
            &*r.state,
            &*r.node,
            &*r.size,
            &*r.age,
        ]
    }));
    if with_namespace {
        lines[0].insert(0, "NAMESPACE");
        for (line, row) in lines[1..].iter_mut().zip(rows) {
            line.insert(0, &row.namespace);
        }
    }
    columns(&lines)
}

/// The policies under a header: what each protects and how, and where its schedule stands
/// (the soonest next checkpoint of its pods); NAMESPACE first if asked.
pub fn policies(policies: &[CheckpointPolicy], now: Timestamp, with_namespace: bool) -> String {
    let text = |v: Option<String>| v.unwrap_or_else(|| NONE.to_owned());
    let rows: Vec<[String; 8]> = policies
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            let pods = status.map_or(&[][..], |s| &s.pods);
            let next = pods
                .iter()
                .filter_map(|e| e.next_due.as_ref())
                .min_by_key(|t| t.0);
            [
                text(p.metadata.namespace.clone()),
                text(p.metadata.name.clone()),
                text(status.and_then(|s| s.selected_pods).map(|n| n.to_string())),
                text(p.spec.schedule.as_ref().map(|s| age(s.interval_seconds))),
                p.spec.retention.keep_newest.to_string(),
                text(p.spec.on_eviction.map(|a| format!("{a:?}"))),
                text(p.spec.on_node_loss.map(|a| format!("{a:?}"))),
                text(next.map(|t| format!("in {}", age(t.0.as_second() - now.as_second())))),
            ]
        })
        .collect();
    let header = [
        "NAMESPACE",
        "POLICY",
        "PODS",
        "EVERY",
        "KEEP",
        "ON EVICTION",
        "ON NODE LOSS",
        "NEXT",
    ];
    let skip = usize::from(!with_namespace);
    let mut lines: Vec<Vec<&str>> = vec![header[skip..].to_vec()];
    lines.extend(
        rows.iter()
            .map(|r| r[skip..].iter().map(String::as_str).collect()),
    );
    columns(&lines)
}

/// `lines` (the header first) in columns separated by three spaces, as `kubectl get` lays
/// them out.
pub fn columns(lines: &[Vec<&str>]) -> String {
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|line| {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:w$}"))
                .collect();
            format!("{}\n", cells.join("   ").trim_end())
        })
        .collect()
}

/// Bytes in binary units, one decimal from KiB on.
fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// Seconds as kubectl's coarse ages: 45s, 12m, 5h, 3d.
pub fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_say_what_they_protect_and_when_next() {
        let policy: CheckpointPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "checkpointing.zacchaeuschok.github.io/v1alpha1",
            "kind": "CheckpointPolicy",
            "metadata": {"name": "protect", "namespace": "team"},
            "spec": {
                "selector": {}, "schedule": {"intervalSeconds": 900},
                "retention": {"keepNewest": 4}, "onEviction": "Migrate",
            },
            "status": {"selectedPods": 2, "pods": [
                {"pod": "a", "nextDue": "2026-12-05T12:10:00Z"},
                {"pod": "b", "nextDue": "2026-12-05T12:05:00Z"},
            ]},
        }))
        .unwrap();
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        assert_eq!(
            policies(std::slice::from_ref(&policy), now, false),
            "POLICY    PODS   EVERY   KEEP   ON EVICTION   ON NODE LOSS   NEXT\n\
             protect   2      15m     4      Migrate       <none>         in 5m\n"
        );
        assert!(policies(&[policy], now, true).starts_with("NAMESPACE   POLICY"));
    }

    fn checkpoint(status: serde_json::Value) -> ContainerCheckpoint {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "checkpointing.zacchaeuschok.github.io/v1alpha1",
            "kind": "ContainerCheckpoint",
            "metadata": {"name": "cp1", "namespace": "ns",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"podName": "stateful-app", "container": "counter"},
            "status": status,
        }))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_completed_checkpoint_row() {
        let cc = checkpoint(serde_json::json!({
            "state": "Completed", "nodeName": "node1", "archiveSize": 1_572_864,
        }));
        let row = Row::new(&cc, at("2026-01-01T00:02:30Z"));
        assert_eq!(
            row,
            Row {
                namespace: "ns".into(),
                name: "cp1".into(),
                pod: "stateful-app".into(),
                container: "counter".into(),
                state: "Completed".into(),
                node: "node1".into(),
                size: "1.5MiB".into(),
                age: "2m".into(),
            }
        );
    }

    #[test]
    fn a_new_request_is_pending_with_nothing_known() {
        let row = Row::new(
            &checkpoint(serde_json::json!({})),
            at("2026-01-01T00:00:05Z"),
        );
        assert_eq!(
            (&*row.state, &*row.node, &*row.size, &*row.age),
            ("Pending", NONE, NONE, "5s")
        );
    }

    #[test]
    fn columns_line_up() {
        let cc = checkpoint(serde_json::json!({"state": "Failed"}));
        let rows = [Row::new(&cc, at("2026-01-03T00:00:00Z"))];
        assert_eq!(
            render(&rows, false),
            "NAME   POD            CONTAINER   STATE    NODE     SIZE     AGE\n\
             cp1    stateful-app   counter     Failed   <none>   <none>   2d\n"
        );
        assert_eq!(
            render(&rows, true),
            "NAMESPACE   NAME   POD            CONTAINER   STATE    NODE     SIZE     AGE\n\
             ns          cp1    stateful-app   counter     Failed   <none>   <none>   2d\n"
        );
        assert_eq!(
            render(&[], false),
            "NAME   POD   CONTAINER   STATE   NODE   SIZE   AGE\n"
        );
    }

    #[test]
    fn sizes_and_ages() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(1023), "1023B");
        assert_eq!(size(1024), "1.0KiB");
        assert_eq!(size(5 << 30), "5.0GiB");
        assert_eq!(size(3 << 50), "3072.0TiB");
        assert_eq!(age(-3), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(3599), "59m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(86_400 * 9), "9d");
    }
}
