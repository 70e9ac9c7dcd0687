//! Which CRIU the node's runc runs, as far as noded can tell. noded's image ships no `criu`,
//! so its own PATH says nothing of the node's: the node setup's report does (it ran the node's
//! `criu --version`), then a `criu` on PATH (an image built with one); with neither the check
//! warns instead of failing.

use checkpointing::runtime::{Finding, Verdict};

use crate::setup::report::{NodeCriu, SetupReport};

/// The node's CRIU from the setup's `report` (read from the node, `None`: there is none) and
/// the `criu` on noded's PATH (its version, or why there is none); `None` when neither tells.
pub fn known(
    report: Result<Option<SetupReport>, String>,
    on_path: Result<String, String>,
) -> Option<NodeCriu> {
    match report {
        Ok(Some(report)) => Some(report.criu),
        _ => on_path.ok().map(NodeCriu::Version),
    }
}

/// The CRIU check on a node whose runtime's runc runs the node's `criu`.
pub fn finding(criu: Option<&NodeCriu>) -> Finding {
    match criu {
        Some(NodeCriu::Version(v)) => Finding::new(Verdict::Ok, format!("criu {v} on the node")),
        Some(NodeCriu::Missing(why)) => Finding::new(Verdict::Failed, why.clone()),
        None => Finding::new(
            Verdict::Assumed,
            "unknown: enable nodeSetup or check criu --version on the node",
        ),
    }
}

/// Its version, when known.
pub fn version(criu: Option<&NodeCriu>) -> Option<String> {
    match criu {
        Some(NodeCriu::Version(v)) => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(criu: NodeCriu) -> SetupReport {
        SetupReport {
            runtime: "containerd".into(),
            criu,
            written: vec![],
            owned: vec![],
            restart: vec![],
            kubelet_flags: vec![],
            manual: vec![],
        }
    }

    #[test]
    fn the_setups_report_tells_before_noded_own_path() {
        let missing = NodeCriu::Missing("no criu on the node".into());
        assert_eq!(
            known(Ok(Some(report(missing.clone()))), Ok("4.1".into())),
            Some(missing)
        );
        assert_eq!(
            known(Ok(None), Ok("4.1".into())),
            Some(NodeCriu::Version("4.1".into()))
        );
        assert_eq!(known(Err("unreadable".into()), Err("no criu".into())), None);
    }

    #[test]
    fn without_a_report_or_criu_on_path_it_warns_instead_of_failing() {
        let unknown = finding(None);
        assert_eq!(unknown.verdict, Verdict::Assumed);
        assert!(unknown.detail.contains("enable nodeSetup"), "{unknown:?}");
        let found = NodeCriu::Version("4.1".into());
        assert_eq!(finding(Some(&found)).verdict, Verdict::Ok);
        assert_eq!(version(Some(&found)).as_deref(), Some("4.1"));
        let missing = NodeCriu::Missing("criu: not found".into());
        assert_eq!(finding(Some(&missing)).verdict, Verdict::Failed);
        assert_eq!(version(Some(&missing)), None);
    }
}
