//! Where a migrated or restored pod may run: on the target node, on any node but the source,
//! or among the nodes that can restore its checkpoint. Pure; the migration writes it into the
//! pod it creates, the webhook into a workload's replacement and into every restore.

use checkpointing::crd::{PodMigrationSpec, PodMigrationStatus};
pub use checkpointing::names::HOSTNAME_LABEL;
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

/// Node placement of a migrated or restored pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    On(String),
    AwayFrom(String),
    /// One of these nodes (by name).
    Among(Vec<String>),
}

impl Placement {
    /// Where a migration puts its pod: its target, else anywhere but its source.
    pub fn of(spec: &PodMigrationSpec, status: &PodMigrationStatus) -> Self {
        Self::new(
            spec.target_node.as_deref(),
            status.source_node.as_deref().unwrap_or_default(),
        )
    }

    fn new(target: Option<&str>, source: &str) -> Self {
        match target {
            Some(target) => Self::On(target.to_owned()),
            None => Self::AwayFrom(source.to_owned()),
        }
    }

    /// By the node's name (`matchFields`), which unlike the hostname label always exists.
    /// A node field selector takes one value, so a set is alternatives, one node each.
    fn alternatives(&self) -> Vec<NodeSelectorRequirement> {
        let by_name = |operator: &str, node: &String| NodeSelectorRequirement {
            key: NAME_FIELD.to_owned(),
            operator: operator.to_owned(),
            values: Some(vec![node.clone()]),
        };
        match self {
            Self::On(node) => vec![by_name("In", node)],
            Self::AwayFrom(node) => vec![by_name("NotIn", node)],
            Self::Among(nodes) => nodes.iter().map(|n| by_name("In", n)).collect(),
        }
    }

    /// `affinity` with this placement required as well. Required terms are alternatives, so
    /// each of them gains the placement (once per node of a set); the pod's own wishes still
    /// hold. A term that has it already is left alone, so applying a placement twice (the
    /// migration's copy, then the webhook) changes nothing more.
    pub fn apply(&self, affinity: Option<&Affinity>) -> Affinity {
        let mut affinity = affinity.cloned().unwrap_or_default();
        let node = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        let required = node
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(NodeSelector::default);
        let mut terms = std::mem::take(&mut required.node_selector_terms);
        if terms.is_empty() {
            terms.push(NodeSelectorTerm::default());
        }
        let alternatives = self.alternatives();
        for term in terms {
            let fields = term.match_fields.as_deref().unwrap_or_default();
            if alternatives.iter().any(|a| fields.contains(a)) {
                required.node_selector_terms.push(term);
                continue;
            }
            for alternative in &alternatives {
                let mut term = term.clone();
                term.match_fields
                    .get_or_insert_with(Vec::new)
                    .push(alternative.clone());
                required.node_selector_terms.push(term);
            }
        }
        affinity
    }
}

/// The only field a node selector term may match (`matchFields`).
pub const NAME_FIELD: &str = "metadata.name";

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(affinity: &Affinity) -> Vec<Vec<(String, String)>> {
        let node = affinity.node_affinity.as_ref().unwrap();
        let required = node
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap();
        required
            .node_selector_terms
            .iter()
            .map(|t| {
                t.match_fields
                    .iter()
                    .flatten()
                    .map(|r| (r.operator.clone(), r.values.clone().unwrap().join(",")))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_pod_without_affinity_gets_one_term() {
        let on = Placement::new(Some("node2"), "node1").apply(None);
        assert_eq!(fields(&on), [[("In".to_owned(), "node2".to_owned())]]);
        let away = Placement::new(None, "node1").apply(None);
        assert_eq!(fields(&away), [[("NotIn".to_owned(), "node1".to_owned())]]);
    }

    /// The API server takes one value per node field selector: a set is one term per node.
    #[test]
    fn a_set_is_one_term_per_node_and_applying_it_twice_adds_nothing() {
        let pair = |op: &str, node: &str| (op.to_owned(), node.to_owned());
        let among = Placement::Among(vec!["node1".into(), "node2".into()]);
        let once = among.apply(None);
        assert_eq!(
            fields(&once),
            [[pair("In", "node1")], [pair("In", "node2")]]
        );
        assert_eq!(among.apply(Some(&once)), once);
        let away = Placement::AwayFrom("node1".into()).apply(None);
        let both = among.apply(Some(&away));
        assert_eq!(
            fields(&both),
            [
                [pair("NotIn", "node1"), pair("In", "node1")],
                [pair("NotIn", "node1"), pair("In", "node2")]
            ]
        );
        assert_eq!(among.apply(Some(&both)), both);
    }

    #[test]
    fn every_existing_term_keeps_its_requirements_and_gains_the_placement() {
        let term = |zone: &str| NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "zone".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![zone.to_owned()]),
            }]),
            match_fields: None,
        };
        let affinity = Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![term("a"), term("b")],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        };
        let pinned = Placement::On("node2".to_owned()).apply(Some(&affinity));
        let terms = &pinned
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 2);
        for (t, zone) in terms.iter().zip(["a", "b"]) {
            assert_eq!(
                t.match_expressions.as_ref().unwrap()[0]
                    .values
                    .as_ref()
                    .unwrap()[0],
                zone
            );
        }
        assert_eq!(
            fields(&pinned),
            [
                [("In".into(), "node2".into())],
                [("In".into(), "node2".into())]
            ]
        );
    }
}
