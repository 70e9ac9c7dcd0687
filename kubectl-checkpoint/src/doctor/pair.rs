//! The two nodes a trial checkpoints on and restores on. Pure.

use super::node::NodeHealth;

/// A trial's nodes: the pod is checkpointed on `source` and restored on `target`.
#[derive(Debug, PartialEq, Eq)]
pub struct Pair {
    pub source: String,
    pub target: String,
}

/// The first two nodes (in the order given) that are ready, take pinned pods, run the same
/// runtime and architecture, and whose target can restore: a checkpoint restores only on a
/// runtime of its family and machine of its architecture. Why none when there are none.
pub fn choose(nodes: &[NodeHealth]) -> Result<Pair, String> {
    let usable: Vec<&NodeHealth> = nodes
        .iter()
        .filter(|n| n.ready() && n.schedulable && n.runtime.is_some() && n.arch.is_some())
        .collect();
    let kind = |n: &NodeHealth| (n.runtime.clone(), n.arch.clone());
    usable
        .iter()
        .flat_map(|source| usable.iter().map(move |target| (*source, *target)))
        .find(|(source, target)| {
            source.name != target.name
                && kind(source) == kind(target)
                && target.cannot_restore.is_none()
        })
        .map(|(source, target)| Pair {
            source: source.name.clone(),
            target: target.name.clone(),
        })
        .ok_or_else(|| {
            format!(
                "no two nodes to try it on: it needs two ready nodes that take pods, with the \
                 same runtime and architecture, the second able to restore ({} ready and \
                 schedulable: {})",
                usable.len(),
                usable
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::node::tests::{ALL_OK, lease, node, now};
    use checkpointing::names::ARCH_ANNOTATION;

    fn health(name: &str, runtime: &str, arch: &str) -> NodeHealth {
        let mut l = lease(runtime, "2026-01-01T00:09:50Z", &ALL_OK);
        l.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ARCH_ANNOTATION.into(), arch.into());
        NodeHealth::new(&node(name, arch, "x"), Some(&l), now(), "ns")
    }

    fn pair(source: &str, target: &str) -> Result<Pair, String> {
        Ok(Pair {
            source: source.into(),
            target: target.into(),
        })
    }

    #[test]
    fn two_nodes_of_one_runtime_and_architecture_make_a_pair() {
        let nodes = [
            health("a", "cri-o", "amd64"),
            health("b", "containerd", "amd64"),
            health("c", "containerd", "arm64"),
            health("d", "containerd", "amd64"),
        ];
        assert_eq!(choose(&nodes), pair("b", "d"));
    }

    #[test]
    fn the_target_must_restore_and_take_pods() {
        let mut nodes = [health("a", "cri-o", "amd64"), health("b", "cri-o", "amd64")];
        nodes[1].cannot_restore = Some("no CRIU".into());
        assert_eq!(choose(&nodes), pair("b", "a"), "b checkpoints, a restores");
        nodes[0].schedulable = false;
        let why = choose(&nodes).unwrap_err();
        assert!(why.contains("1 ready and schedulable: b"), "{why}");
    }

    #[test]
    fn nodes_without_noded_or_not_ready_are_not_tried() {
        let missing = NodeHealth::new(&node("m", "amd64", "cri-o://1"), None, now(), "ns");
        let mut not_ready = health("n", "cri-o", "amd64");
        not_ready.checks[0].state = crate::doctor::state::State::Failed;
        assert!(choose(&[missing, not_ready, health("a", "cri-o", "amd64")]).is_err());
        // One node cannot be both ends.
        assert!(choose(&[health("a", "cri-o", "amd64")]).is_err());
    }
}
