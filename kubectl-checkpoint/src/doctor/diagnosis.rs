//! Everything the doctor found: the install (CRDs, restore webhook), every node, the trial if
//! one ran, and the roll-up into the failing items that decide the exit status. Pure.

use serde::Serialize;

use super::node::{Daemon, NodeHealth};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    pub crds: Vec<Crd>,
    /// The MutatingWebhookConfiguration holding the restore webhook, if one does.
    pub webhook: Option<String>,
    pub nodes: Vec<NodeHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<Trial>,
}

#[derive(Debug, Serialize)]
pub struct Crd {
    pub name: String,
    pub installed: bool,
}

/// A throw-away checkpoint and restore across two nodes.
#[derive(Debug, Default, Serialize)]
pub struct Trial {
    pub source: Option<String>,
    pub target: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub seconds: u64,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

impl Trial {
    /// Every step it took went well, the last one too (a trial that could not start has one
    /// failed step).
    pub fn passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }
}

/// The JSON of `-o json`: the diagnosis, its failing items and whether there were none.
#[derive(Serialize)]
pub struct Verdict<'a> {
    #[serde(flatten)]
    pub diagnosis: &'a Diagnosis,
    pub problems: Vec<String>,
    pub ok: bool,
}

impl Diagnosis {
    /// The failing items, one line each: what is not installed, every node whose noded runs
    /// but is not ready, no noded anywhere, a failed trial step. Nodes without noded are
    /// reported, not failed: the DaemonSet may be meant to leave them out.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .crds
            .iter()
            .filter(|c| !c.installed)
            .map(|c| {
                format!(
                    "CRD {} is not installed: install the chart (crds.install=true) or \
                     `kubectl apply -k deploy/`",
                    c.name
                )
            })
            .collect();
        if self.webhook.is_none() {
            problems.push(format!(
                "no MutatingWebhookConfiguration has the restore webhook {}: restored pods \
                 would start afresh; the controller registers it (is it running?)",
                checkpointing::names::RESTORE_WEBHOOK
            ));
        }
        if !self.nodes.iter().any(|n| n.daemon == Daemon::Running) {
            problems.push(
                "no node runs a node daemon: is noded's DaemonSet installed, and its Leases in \
                 --lease-namespace?"
                    .to_owned(),
            );
        }
        problems.extend(self.nodes.iter().flat_map(NodeHealth::problems));
        if let Some(trial) = &self.trial {
            problems.extend(
                trial
                    .steps
                    .iter()
                    .filter(|s| !s.ok)
                    .map(|s| match &s.advice {
                        Some(advice) => format!("trial: {}: {}: {advice}", s.name, s.detail),
                        None => format!("trial: {}: {}", s.name, s.detail),
                    }),
            );
            if !trial.passed() && trial.steps.iter().all(|s| s.ok) {
                problems.push("trial: it did not finish".to_owned());
            }
        }
        problems
    }

    pub fn verdict(&self) -> Verdict<'_> {
        let problems = self.problems();
        Verdict {
            diagnosis: self,
            ok: problems.is_empty(),
            problems,
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::doctor::node::tests::{ALL_OK, lease, node, now};

    pub fn installed() -> Diagnosis {
        Diagnosis {
            crds: vec![Crd {
                name: "containercheckpoints.x".into(),
                installed: true,
            }],
            webhook: Some("checkpointing-restore".into()),
            nodes: vec![
                NodeHealth::new(
                    &node("node1", "amd64", "x"),
                    Some(&lease("containerd", "2026-01-01T00:09:50Z", &ALL_OK)),
                    now(),
                    "ns",
                ),
                NodeHealth::new(
                    &node("cp", "amd64", "containerd://2.2.7"),
                    None,
                    now(),
                    "ns",
                ),
            ],
            trial: None,
        }
    }

    fn step(name: &str, ok: bool) -> Step {
        Step {
            name: name.into(),
            ok,
            seconds: 1,
            detail: format!("{name} detail"),
            advice: None,
        }
    }

    #[test]
    fn a_ready_install_has_no_problems_even_with_a_node_without_noded() {
        let d = installed();
        assert_eq!(d.problems(), Vec::<String>::new());
        assert!(d.verdict().ok);
    }

    #[test]
    fn missing_install_pieces_and_failed_trial_steps_are_problems() {
        let mut d = installed();
        d.crds[0].installed = false;
        d.webhook = None;
        d.trial = Some(Trial {
            steps: vec![step("checkpoint", true), step("restore", false)],
            ..Trial::default()
        });
        d.trial.as_mut().unwrap().steps[1].advice = Some("do this".into());
        let problems = d.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("CRD containercheckpoints.x is not installed"));
        assert!(problems[1].contains("restore webhook"));
        assert_eq!(problems[2], "trial: restore: restore detail: do this");
        let verdict = d.verdict();
        assert!(!verdict.ok);
        let json = serde_json::to_value(&verdict).unwrap();
        assert_eq!(json["problems"].as_array().unwrap().len(), 3);
        assert_eq!(json["nodes"][0]["name"], "node1");
        assert_eq!(json["nodes"][0]["daemon"]["state"], "running");
        assert_eq!(json["trial"]["steps"][1]["advice"], "do this");
    }

    #[test]
    fn no_noded_anywhere_is_a_problem() {
        let mut d = installed();
        d.nodes.remove(0);
        assert!(d.problems()[0].contains("no node runs a node daemon"));
    }

    #[test]
    fn a_trial_passes_only_when_every_step_went_well() {
        assert!(!Trial::default().passed());
        let mut d = installed();
        d.trial = Some(Trial::default());
        assert_eq!(d.problems(), ["trial: it did not finish"]);
        let trial = Trial {
            steps: vec![step("a", true), step("b", true)],
            ..Trial::default()
        };
        assert!(trial.passed());
    }
}
