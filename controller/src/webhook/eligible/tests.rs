use super::*;
use crate::fixtures::now;
use checkpointing::names::noded_lease_name;
use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelector, NodeSelectorRequirement};

/// A live containerd daemon on amd64 that can restore.
fn daemon(node: &str) -> NodeDaemon {
    NodeDaemon {
        node: node.into(),
        expires: Some(now() + SignedDuration::from_secs(30)),
        runtime: Some("containerd".into()),
        arch: Some("amd64".into()),
        cannot_restore: None,
    }
}

/// node1 and node2 as [`daemon`]; node3 runs CRI-O.
fn node3_runs_crio() -> [NodeDaemon; 3] {
    let crio = NodeDaemon {
        runtime: Some("cri-o".into()),
        ..daemon("node3")
    };
    [daemon("node1"), daemon("node2"), crio]
}

fn bound(node: &str) -> Asked<'_> {
    Asked {
        node_name: Some(node),
        ..Asked::default()
    }
}

fn wishing(affinity: &Affinity) -> Asked<'_> {
    Asked {
        affinity: Some(affinity),
        ..Asked::default()
    }
}

fn wanted() -> Wanted {
    Wanted {
        runtime: Some("containerd".into()),
        arch: Some("amd64".into()),
    }
}

/// The name rule of every required term, as (operator, values).
fn name_rules(affinity: &Affinity) -> Vec<Vec<(String, Vec<String>)>> {
    required_terms(Some(affinity))
        .iter()
        .map(|t| {
            t.match_fields
                .iter()
                .flatten()
                .map(|r| (r.operator.clone(), r.values.clone().unwrap()))
                .collect()
        })
        .collect()
}

/// The terms of a placement among `nodes`: one a node (a node field selector takes one value).
fn among(nodes: &[&str]) -> Vec<Vec<(String, Vec<String>)>> {
    nodes.iter().map(|n| vec![by_name("In", n)]).collect()
}

fn by_name(operator: &str, node: &str) -> (String, Vec<String>) {
    (operator.into(), vec![node.to_owned()])
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn required(terms: Vec<NodeSelectorTerm>) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: terms,
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

#[test]
fn only_live_daemons_of_the_checkpoints_runtime_and_arch_that_can_restore_are_eligible() {
    let expired = NodeDaemon {
        expires: Some(now() - SignedDuration::from_secs(125)),
        ..daemon("node2")
    };
    let crio = NodeDaemon {
        runtime: Some("cri-o".into()),
        ..daemon("node3")
    };
    let arm = NodeDaemon {
        arch: Some("arm64".into()),
        ..daemon("node4")
    };
    let broken = NodeDaemon {
        cannot_restore: Some("criu 3.15 is older than 3.16".into()),
        ..daemon("node5")
    };
    let daemons = [daemon("node1"), expired, crio, arm, broken, daemon("node6")];
    let affinity = place(Asked::default(), &daemons, &wanted(), now())
        .unwrap()
        .unwrap();
    assert_eq!(name_rules(&affinity), among(&["node1", "node6"]));

    let none = place(Asked::default(), &daemons[1..5], &wanted(), now()).unwrap_err();
    assert_eq!(
        none.to_string(),
        "no node can restore this checkpoint: node2's node daemon is not running (its Lease \
         expired 2m 5s ago); node3 runs cri-o (checkpoint from containerd); node4 is arm64 \
         (checkpoint from amd64); node5's runtime cannot restore (criu 3.15 is older than \
         3.16); restore it once a node of the checkpoint's runtime and architecture has a \
         running node daemon whose runtime can restore"
    );
    let nothing = place(Asked::default(), &[], &wanted(), now()).unwrap_err();
    assert!(
        nothing.to_string().contains("no node daemon runs anywhere"),
        "{nothing}"
    );
}

#[test]
fn what_the_checkpoint_does_not_tell_constrains_nothing() {
    let unknown_arch = Wanted {
        arch: None,
        ..wanted()
    };
    let arm = NodeDaemon {
        arch: Some("arm64".into()),
        ..daemon("node1")
    };
    assert_eq!(fit(Some(&arm), &unknown_arch, now()), Ok(()));
    assert_eq!(fit(Some(&arm), &Wanted::default(), now()), Ok(()));
    // A node that does not say what it runs is no match for a checkpoint that does.
    let silent = NodeDaemon {
        runtime: None,
        ..daemon("node1")
    };
    assert_eq!(
        fit(Some(&silent), &wanted(), now()),
        Err(Unfit::Runtime {
            runs: None,
            wanted: "containerd".into()
        })
    );
    assert_eq!(fit(None, &Wanted::default(), now()), Err(Unfit::NoDaemon));
}

#[test]
fn the_checkpoint_is_told_by_its_contents_runtime_and_its_nodes_lease() {
    let source = NodeDaemon {
        runtime: Some("cri-o".into()),
        arch: Some("arm64".into()),
        ..daemon("node1")
    };
    assert_eq!(
        Wanted::of(Some("containerd v2.3.7"), Some(&source)),
        Wanted {
            runtime: Some("containerd".into()),
            arch: Some("arm64".into())
        }
    );
    assert_eq!(
        Wanted::of(None, Some(&source)).runtime.as_deref(),
        Some("cri-o")
    );
    assert_eq!(
        Wanted::of(Some("cri-o 1.36.3"), None),
        Wanted {
            runtime: Some("cri-o".into()),
            arch: None
        }
    );
}

#[test]
fn a_lease_tells_its_node_and_what_it_publishes() {
    let mut lease = crate::fixtures::lease("2025-01-01T00:00:50Z");
    lease.metadata.name = Some(noded_lease_name("node7"));
    lease.metadata.annotations = Some(
        [
            (RUNTIME_ANNOTATION.to_owned(), "cri-o".to_owned()),
            (ARCH_ANNOTATION.to_owned(), "arm64".to_owned()),
            (CANNOT_RESTORE_ANNOTATION.to_owned(), "no criu".to_owned()),
        ]
        .into(),
    );
    let daemon = NodeDaemon::from_lease(&lease).unwrap();
    assert_eq!(daemon.node, "node7");
    assert_eq!(daemon.runtime.as_deref(), Some("cri-o"));
    assert_eq!(daemon.arch.as_deref(), Some("arm64"));
    assert_eq!(daemon.cannot_restore.as_deref(), Some("no criu"));
    assert_eq!(
        daemon.expires,
        Some("2025-01-01T00:01:30Z".parse().unwrap())
    );
    lease.metadata.name = Some("checkpoint-controller".into());
    assert_eq!(NodeDaemon::from_lease(&lease), None);
}

#[test]
fn a_pod_bound_to_a_node_is_checked_there_and_left_unchanged() {
    let daemons = node3_runs_crio();
    assert_eq!(place(bound("node1"), &daemons, &wanted(), now()), Ok(None));
    let denied = place(bound("node3"), &daemons, &wanted(), now()).unwrap_err();
    assert_eq!(
        denied.to_string(),
        "the pod is bound to node node3 (spec.nodeName), which cannot restore this checkpoint: \
         node3 runs cri-o (checkpoint from containerd); let the pod run on a node that can: \
         node1, node2"
    );
    let unknown = place(bound("node9"), &daemons, &wanted(), now()).unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("node9 has no node daemon (no Lease)"),
        "{unknown}"
    );
}

#[test]
fn every_existing_term_keeps_its_requirements_and_gains_the_eligible_nodes() {
    let zone = |z: &str| NodeSelectorTerm {
        match_expressions: Some(vec![requirement("zone", "In", &[z])]),
        match_fields: None,
    };
    let affinity = required(vec![zone("a"), zone("b")]);
    let daemons = [daemon("node1"), daemon("node2")];
    let placed = place(wishing(&affinity), &daemons, &wanted(), now())
        .unwrap()
        .unwrap();
    let terms = required_terms(Some(&placed));
    assert_eq!(terms.len(), 4);
    for (term, z) in terms.iter().zip(["a", "a", "b", "b"]) {
        assert_eq!(
            term.match_expressions.as_deref(),
            Some(&[requirement("zone", "In", &[z])][..])
        );
    }
    assert_eq!(
        name_rules(&placed),
        [among(&["node1", "node2"]), among(&["node1", "node2"])].concat()
    );
    // Placed again (a migration's copy the controller placed, then the webhook): no change.
    assert_eq!(
        place(wishing(&placed), &daemons, &wanted(), now()),
        Ok(Some(placed.clone()))
    );
}

#[test]
fn a_pod_narrowed_by_name_is_placed_among_what_it_allows_or_told_what_it_rules_out() {
    let daemons = node3_runs_crio();
    // A migration without a target: anywhere but its source.
    let away = required(vec![NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![requirement(NAME_FIELD, "NotIn", &["node1"])]),
    }]);
    let placed = place(wishing(&away), &daemons, &wanted(), now())
        .unwrap()
        .unwrap();
    assert_eq!(
        name_rules(&placed),
        [[by_name("NotIn", "node1"), by_name("In", "node2")]]
    );
    // A migration's target that cannot restore it, and a node without a daemon.
    let on = required(vec![NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![requirement(NAME_FIELD, "In", &["node3", "node9"])]),
    }]);
    let denied = place(wishing(&on), &daemons, &wanted(), now()).unwrap_err();
    assert_eq!(
        denied.to_string(),
        "no node that the pod's node selector and required node affinity allow can restore \
         this checkpoint: node3 runs cri-o (checkpoint from containerd); node9 has no node \
         daemon (no Lease); let the pod run on a node that can: node1, node2"
    );
}

#[test]
fn a_hostname_selector_naming_a_node_narrows_like_its_name_and_any_other_is_left_alone() {
    let daemons = node3_runs_crio();
    fn pinned(host: &str) -> Asked<'_> {
        Asked {
            hostname: Some(host),
            ..Asked::default()
        }
    }
    let denied = place(pinned("node3"), &daemons, &wanted(), now()).unwrap_err();
    assert!(
        denied
            .to_string()
            .contains("allow can restore this checkpoint: node3 runs cri-o"),
        "{denied}"
    );
    let placed = place(pinned("node2"), &daemons, &wanted(), now())
        .unwrap()
        .unwrap();
    assert_eq!(name_rules(&placed), among(&["node2"]));
    // A label value that names no node: the nodes that can restore, as without it.
    let placed = place(pinned("host-b.example"), &daemons, &wanted(), now())
        .unwrap()
        .unwrap();
    assert_eq!(name_rules(&placed), among(&["node1", "node2"]));
}

#[test]
fn a_denial_stays_short_however_many_nodes_and_whatever_they_say() {
    let daemons: Vec<NodeDaemon> = (0..500)
        .map(|i| NodeDaemon {
            cannot_restore: Some("x".repeat(10_000)),
            ..daemon(&format!("node{i:03}"))
        })
        .collect();
    let hostile = required(vec![NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![requirement(NAME_FIELD, "In", &[&"/".repeat(5000)])]),
    }]);
    for asked in [Asked::default(), wishing(&hostile)] {
        let message = place(asked, &daemons, &wanted(), now())
            .unwrap_err()
            .to_string();
        assert!(message.len() < 2_000, "{} bytes: {message}", message.len());
    }
    let message = place(Asked::default(), &daemons, &wanted(), now())
        .unwrap_err()
        .to_string();
    assert!(message.contains(" and 492 more"), "{message}");
}
