//! The doctor's findings as text: the install, a table of the nodes, each node's checks with
//! what to do, the trial's steps, and the failing items last. Pure.

use crate::table::{age, columns};

use super::diagnosis::Diagnosis;
use super::node::{Daemon, NodeHealth};

const NONE: &str = "<none>";

pub fn text(d: &Diagnosis) -> String {
    let mut out = String::new();
    let installed = d.crds.iter().filter(|c| c.installed).count();
    out.push_str(&format!(
        "CRDs: {installed} of {} installed\n",
        d.crds.len()
    ));
    out.push_str(&match &d.webhook {
        Some(name) => format!("restore webhook: in MutatingWebhookConfiguration {name}\n"),
        None => "restore webhook: not registered\n".to_owned(),
    });
    out.push('\n');
    out.push_str(&nodes(&d.nodes));
    for node in &d.nodes {
        out.push('\n');
        out.push_str(&checks(node));
    }
    if let Some(trial) = &d.trial {
        let pair = match (&trial.source, &trial.target) {
            (Some(source), Some(target)) => format!(" {source} -> {target}"),
            _ => String::new(),
        };
        out.push_str(&format!("\nTrial{pair}:\n"));
        let mut lines = vec![vec!["  STEP", "RESULT", "TIME", "DETAIL"]];
        let cells: Vec<[String; 4]> = trial
            .steps
            .iter()
            .map(|s| {
                [
                    format!("  {}", s.name),
                    (if s.ok { "ok" } else { "failed" }).to_owned(),
                    format!("{}s", s.seconds),
                    s.detail.clone(),
                ]
            })
            .collect();
        lines.extend(cells.iter().map(|c| c.iter().map(String::as_str).collect()));
        out.push_str(&columns(&lines));
        out.push_str(if trial.passed() {
            "trial passed\n"
        } else {
            "trial failed\n"
        });
    }
    let problems = d.problems();
    if problems.is_empty() {
        out.push_str("\nevery node with a node daemon is ready\n");
    } else {
        out.push_str(&format!("\n{} failing:\n", problems.len()));
        for p in problems {
            out.push_str(&format!("- {p}\n"));
        }
    }
    out
}

/// NODE NODED RUNTIME ARCH CRIU CHECKED READY.
fn nodes(nodes: &[NodeHealth]) -> String {
    let rows: Vec<[String; 7]> = nodes
        .iter()
        .map(|n| {
            let runtime = match (&n.runtime, &n.runtime_version) {
                (Some(name), Some(version)) => format!("{name} {version}"),
                (Some(name), None) => name.clone(),
                _ => NONE.to_owned(),
            };
            let noded = match n.daemon {
                Daemon::Running => "running".to_owned(),
                Daemon::Expired { seconds } => format!("expired {} ago", age(seconds)),
                Daemon::Missing => "none".to_owned(),
            };
            let ready = match n.daemon {
                Daemon::Running if n.ready() => "yes",
                Daemon::Running => "no",
                _ => "-",
            };
            [
                n.name.clone(),
                noded,
                runtime,
                n.arch.clone().unwrap_or_else(|| NONE.to_owned()),
                n.criu.clone().unwrap_or_else(|| NONE.to_owned()),
                n.checked_seconds_ago
                    .map_or_else(|| NONE.to_owned(), |s| format!("{} ago", age(s))),
                ready.to_owned(),
            ]
        })
        .collect();
    let mut lines = vec![vec![
        "NODE", "NODED", "RUNTIME", "ARCH", "CRIU", "CHECKED", "READY",
    ]];
    lines.extend(rows.iter().map(|r| r.iter().map(String::as_str).collect()));
    columns(&lines)
}

/// The node's checks, each failing one followed by what to do; or why it has none.
fn checks(n: &NodeHealth) -> String {
    let mut out = format!("{}:\n", n.name);
    match n.daemon {
        Daemon::Running => {}
        Daemon::Expired { seconds } => out.push_str(&format!(
            "  no node daemon on this node (its Lease expired {} ago)\n",
            age(seconds)
        )),
        Daemon::Missing => out.push_str("  no node daemon on this node (no Lease)\n"),
    }
    if let Some(advice) = &n.advice {
        out.push_str(&format!("    to do: {advice}\n"));
    }
    if n.daemon != Daemon::Running {
        return out;
    }
    for c in &n.checks {
        out.push_str(&format!("  {:<15} {:<8} {}\n", c.name, c.state, c.detail));
        if let Some(advice) = &c.advice {
            let kind = if c.required { "to do" } else { "advice" };
            out.push_str(&format!("    {kind}: {advice}\n"));
        }
    }
    if let Some(why) = &n.cannot_restore {
        out.push_str(&format!("  cannot restore: {why}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::diagnosis::tests::installed;
    use crate::doctor::diagnosis::{Step, Trial};

    #[test]
    fn every_node_is_listed_with_its_runtime_and_the_failing_items_come_last() {
        let mut d = installed();
        let text = text(&d);
        let table: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.starts_with("NODE"))
            .take(3)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            table[1],
            [
                "node1",
                "running",
                "containerd",
                "9.9",
                "amd64",
                "4.1",
                "30s",
                "ago",
                "yes"
            ]
        );
        assert_eq!(
            table[2][..5],
            ["cp", "none", "containerd", "2.2.7", "amd64"]
        );
        assert!(text.contains("cp:\n  no node daemon on this node (no Lease)\n    to do: "));
        assert!(
            text.contains("  criu            ok       criu says\n"),
            "{text}"
        );
        assert!(text.contains("    advice: optional: a runtime serving CRI CheckpointPod"));
        assert!(
            text.ends_with("\nevery node with a node daemon is ready\n"),
            "{text}"
        );

        d.webhook = None;
        d.trial = Some(Trial {
            source: Some("node1".into()),
            target: Some("node2".into()),
            steps: vec![Step {
                name: "checkpoint".into(),
                ok: false,
                seconds: 3,
                detail: "Failed: no CRIU".into(),
                advice: None,
            }],
        });
        let text = super::text(&d);
        assert!(text.contains("Trial node1 -> node2:\n  STEP"), "{text}");
        assert!(text.contains("trial failed\n\n2 failing:\n- no MutatingWebhookConfiguration"));
        assert!(
            text.ends_with("- trial: checkpoint: Failed: no CRIU\n"),
            "{text}"
        );
    }
}
