//! Where a migrated pod may run: on the target node, or on any node but the source. Pure; the
//! migration writes it into the pod it creates, the webhook into a workload's replacement.

use checkpointing::crd::{PodMigrationSpec, PodMigrationStatus};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

/// Node placement of a migrated pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    On(String),
    AwayFrom(String),
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
    fn requirement(&self) -> NodeSelectorRequirement {
        let (operator, node) = match self {
            Self::On(node) => ("In", node),
            Self::AwayFrom(node) => ("NotIn", node),
        };
        NodeSelectorRequirement {
            key: "metadata.name".to_owned(),
            operator: operator.to_owned(),
            values: Some(vec![node.clone()]),
        }
    }

    /// `affinity` with this placement required as well. Required terms are alternatives, so
    /// the requirement joins each of them; the pod's own wishes still hold.
    pub fn apply(&self, affinity: Option<&Affinity>) -> Affinity {
        let mut affinity = affinity.cloned().unwrap_or_default();
        let node = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        let required = node
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(NodeSelector::default);
        if required.node_selector_terms.is_empty() {
            required
                .node_selector_terms
                .push(NodeSelectorTerm::default());
        }
        for term in &mut required.node_selector_terms {
            term.match_fields
                .get_or_insert_with(Vec::new)
                .push(self.requirement());
        }
        affinity
    }
}

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
