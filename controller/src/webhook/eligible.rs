//! Which nodes can restore a checkpoint, from what each node daemon publishes on its Lease: a
//! live daemon, the checkpoint's runtime family and architecture, and a runtime that can
//! restore at all. A restore pod gets a required node affinity naming those nodes, or, bound to
//! a node already, must be bound to one of them; where none is left it is refused, each node
//! with its reason. Pure; [`super::serve`] reads the Leases and the checkpoint.

use std::collections::BTreeSet;
use std::fmt;

use checkpointing::names::{
    ARCH_ANNOTATION, CANNOT_RESTORE_ANNOTATION, RUNTIME_ANNOTATION, is_dns_subdomain,
    noded_lease_node,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Affinity, NodeSelectorTerm, PodSpec};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::placement::{HOSTNAME_LABEL, NAME_FIELD, Placement};
use crate::validation::{lease_expiry, shown};

/// Nodes (and reasons) a denial lists before it only counts the rest: it must stay readable
/// in `kubectl` and within an Event, however large the cluster.
const MAX_LISTED: usize = 8;
/// Longest reason quoted from a Lease (a runtime's own words).
const MAX_DETAIL: usize = 160;

/// What a node's daemon says on its Lease, reduced to what placement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDaemon {
    pub node: String,
    /// When its Lease stops vouching for it; `None` when it lacks the times to tell.
    pub expires: Option<Timestamp>,
    pub runtime: Option<String>,
    pub arch: Option<String>,
    pub cannot_restore: Option<String>,
}

impl NodeDaemon {
    /// `None` for a Lease that is not a node daemon's.
    pub fn from_lease(lease: &Lease) -> Option<Self> {
        let node = noded_lease_node(lease.metadata.name.as_deref()?)?;
        let annotation = |key: &str| lease.metadata.annotations.as_ref()?.get(key).cloned();
        Some(Self {
            node: node.to_owned(),
            expires: lease_expiry(lease),
            runtime: annotation(RUNTIME_ANNOTATION),
            arch: annotation(ARCH_ANNOTATION),
            cannot_restore: annotation(CANNOT_RESTORE_ANNOTATION),
        })
    }
}

/// What a node must be to restore the checkpoint; `None` where that is not known, which
/// constrains nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Runtime family, by CRI name (`containerd`, `cri-o`).
    pub runtime: Option<String>,
    /// Architecture, as Go spells it.
    pub arch: Option<String>,
}

impl Wanted {
    /// The runtime family from the Content's `status.runtime` (`containerd v2.3.7`), else from
    /// the Lease of the node that took the checkpoint (`source`); the architecture from that
    /// Lease.
    pub fn of(content_runtime: Option<&str>, source: Option<&NodeDaemon>) -> Self {
        let runtime = content_runtime
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
            .or_else(|| source.and_then(|s| s.runtime.clone()));
        Self {
            runtime,
            arch: source.and_then(|s| s.arch.clone()),
        }
    }
}

/// Why a node cannot restore the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// No Lease: no node daemon has ever run there (or the node is unknown).
    NoDaemon,
    /// The Lease expired this long ago (`None`: it lacks the times to tell).
    Expired(Option<SignedDuration>),
    Runtime {
        runs: Option<String>,
        wanted: String,
    },
    Arch {
        is: Option<String>,
        wanted: String,
    },
    CannotRestore(String),
}

/// A node that cannot restore the checkpoint; `Display` is one clause of a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub node: String,
    pub why: Unfit,
}

impl fmt::Display for Excluded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = node_shown(&self.node);
        let value = |v: &Option<String>| v.as_deref().map(|v| cut(v, 40));
        match &self.why {
            Unfit::NoDaemon => write!(f, "{node} has no node daemon (no Lease)"),
            Unfit::Expired(Some(ago)) => write!(
                f,
                "{node}'s node daemon is not running (its Lease expired {ago:#} ago)"
            ),
            Unfit::Expired(None) => write!(
                f,
                "{node}'s node daemon is not running (its Lease has no renewal)"
            ),
            Unfit::Runtime { runs, wanted } => match value(runs) {
                Some(runs) => write!(f, "{node} runs {runs} (checkpoint from {wanted})"),
                None => write!(f, "{node} reports no runtime (checkpoint from {wanted})"),
            },
            Unfit::Arch { is, wanted } => match value(is) {
                Some(is) => write!(f, "{node} is {is} (checkpoint from {wanted})"),
                None => write!(
                    f,
                    "{node} reports no architecture (checkpoint from {wanted})"
                ),
            },
            Unfit::CannotRestore(why) => {
                write!(
                    f,
                    "{node}'s runtime cannot restore ({})",
                    cut(why, MAX_DETAIL)
                )
            }
        }
    }
}

/// Whether the node whose daemon is `daemon` (if any) can restore a checkpoint that needs
/// `wanted`, at `now`.
pub fn fit(daemon: Option<&NodeDaemon>, wanted: &Wanted, now: Timestamp) -> Result<(), Unfit> {
    let Some(daemon) = daemon else {
        return Err(Unfit::NoDaemon);
    };
    match daemon.expires {
        Some(expiry) if expiry > now => {}
        Some(expiry) => {
            let ago = SignedDuration::from_secs(now.duration_since(expiry).as_secs());
            return Err(Unfit::Expired(Some(ago)));
        }
        None => return Err(Unfit::Expired(None)),
    }
    if let Some(wanted) = &wanted.runtime
        && daemon.runtime.as_ref() != Some(wanted)
    {
        return Err(Unfit::Runtime {
            runs: daemon.runtime.clone(),
            wanted: wanted.clone(),
        });
    }
    if let Some(wanted) = &wanted.arch
        && daemon.arch.as_ref() != Some(wanted)
    {
        return Err(Unfit::Arch {
            is: daemon.arch.clone(),
            wanted: wanted.clone(),
        });
    }
    match &daemon.cannot_restore {
        Some(why) => Err(Unfit::CannotRestore(why.clone())),
        None => Ok(()),
    }
}

/// A restore no node can take; `Display` is the denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaceable {
    /// The node the pod is bound to (`spec.nodeName`), if so.
    pub bound: Option<String>,
    /// Whether the pod's node selector or required node affinity narrowed the nodes by name.
    pub narrowed: bool,
    /// The nodes the pod could run on, and why each cannot restore.
    pub excluded: Vec<Excluded>,
    /// Nodes that could restore, had the pod not ruled them out.
    pub elsewhere: Vec<String>,
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.bound {
            Some(node) => write!(
                f,
                "the pod is bound to node {} (spec.nodeName), which cannot restore this \
                 checkpoint: ",
                node_shown(node)
            )?,
            None if self.narrowed => write!(
                f,
                "no node that the pod's node selector and required node affinity allow can \
                 restore this checkpoint: "
            )?,
            None => write!(f, "no node can restore this checkpoint: ")?,
        }
        let reasons: Vec<String> = self.excluded.iter().map(ToString::to_string).collect();
        if reasons.is_empty() {
            write!(f, "no node daemon runs anywhere")?;
        } else {
            write!(f, "{}", listed(&reasons, "; "))?;
        }
        if self.elsewhere.is_empty() {
            write!(
                f,
                "; restore it once a node of the checkpoint's runtime and architecture has a \
                 running node daemon whose runtime can restore"
            )
        } else {
            let nodes: Vec<String> = self.elsewhere.iter().map(|n| node_shown(n)).collect();
            write!(
                f,
                "; let the pod run on a node that can: {}",
                listed(&nodes, ", ")
            )
        }
    }
}

/// Where a pod asks to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked<'a> {
    /// Bound to this node (`spec.nodeName`).
    pub node_name: Option<&'a str>,
    /// Its `nodeSelector`'s `kubernetes.io/hostname`, which normally is the node's name.
    pub hostname: Option<&'a str>,
    pub affinity: Option<&'a Affinity>,
}

impl<'a> Asked<'a> {
    pub fn of(spec: Option<&'a PodSpec>) -> Self {
        Self {
            node_name: spec.and_then(|s| s.node_name.as_deref()),
            hostname: spec
                .and_then(|s| s.node_selector.as_ref())
                .and_then(|s| s.get(HOSTNAME_LABEL))
                .map(String::as_str),
            affinity: spec.and_then(|s| s.affinity.as_ref()),
        }
    }
}

/// Where a restore pod may run. Bound to a node: that node must fit, and nothing changes
/// (`Ok(None)`). Otherwise its affinity with the fitting nodes it allows required as well.
/// `daemons` are every node daemon's Lease.
pub fn place(
    asked: Asked,
    daemons: &[NodeDaemon],
    wanted: &Wanted,
    now: Timestamp,
) -> Result<Option<Affinity>, Unplaceable> {
    let Asked {
        node_name,
        hostname,
        affinity,
    } = asked;
    let fits = |node: &str| fit(daemons.iter().find(|d| d.node == node), wanted, now);
    let fitting = || -> Vec<String> {
        let nodes: BTreeSet<&str> = daemons.iter().map(|d| d.node.as_str()).collect();
        nodes
            .into_iter()
            .filter(|n| fits(n).is_ok())
            .map(str::to_owned)
            .collect()
    };
    if let Some(node) = node_name.filter(|n| !n.is_empty()) {
        return match fits(node) {
            Ok(()) => Ok(None),
            Err(why) => Err(Unplaceable {
                bound: Some(node.to_owned()),
                narrowed: false,
                excluded: vec![Excluded {
                    node: node.to_owned(),
                    why,
                }],
                elsewhere: fitting(),
            }),
        };
    }
    let rules: Vec<NameRule> = required_terms(affinity).iter().map(NameRule::of).collect();
    // A hostname that is no node daemon's node name may be a label that differs from it: it
    // then rules nothing out here (the scheduler still heeds it).
    let pinned = hostname.filter(|h| daemons.iter().any(|d| d.node == *h));
    let allowed = |node: &str| {
        pinned.is_none_or(|h| h == node)
            && (rules.is_empty() || rules.iter().any(|r| r.allows(node)))
    };
    // The nodes the pod may run on: every node with a daemon, and those it names without one.
    let candidates: BTreeSet<&str> = daemons
        .iter()
        .map(|d| d.node.as_str())
        .chain(rules.iter().flat_map(NameRule::named))
        .filter(|n| allowed(n))
        .collect();
    let mut eligible = Vec::new();
    let mut excluded = Vec::new();
    for node in candidates {
        match fits(node) {
            Ok(()) => eligible.push(node.to_owned()),
            Err(why) => excluded.push(Excluded {
                node: node.to_owned(),
                why,
            }),
        }
    }
    if eligible.is_empty() {
        return Err(Unplaceable {
            bound: None,
            narrowed: pinned.is_some() || rules.iter().any(NameRule::narrows),
            excluded,
            elsewhere: fitting(),
        });
    }
    Ok(Some(Placement::Among(eligible).apply(affinity)))
}

/// The pod's required node selector terms (alternatives).
fn required_terms(affinity: Option<&Affinity>) -> &[NodeSelectorTerm] {
    affinity
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map_or(&[], |r| r.node_selector_terms.as_slice())
}

/// What one term requires of a node's name (`matchFields`, the only field being the name;
/// its labels cannot be told from here, so they constrain nothing).
struct NameRule<'a> {
    /// Each `In` list: the name must be in every one.
    within: Vec<&'a [String]>,
    not: Vec<&'a [String]>,
}

impl<'a> NameRule<'a> {
    fn of(term: &'a NodeSelectorTerm) -> Self {
        let mut rule = Self {
            within: Vec::new(),
            not: Vec::new(),
        };
        for r in term.match_fields.iter().flatten() {
            let values = r.values.as_deref().unwrap_or_default();
            match (r.key.as_str(), r.operator.as_str()) {
                (NAME_FIELD, "In") => rule.within.push(values),
                (NAME_FIELD, "NotIn") => rule.not.push(values),
                _ => {}
            }
        }
        rule
    }

    fn allows(&self, node: &str) -> bool {
        let listed = |values: &&[String]| values.iter().any(|v| v == node);
        self.within.iter().all(listed) && !self.not.iter().any(listed)
    }

    fn named(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.within
            .iter()
            .flat_map(|v| v.iter().map(String::as_str))
    }

    fn narrows(&self) -> bool {
        !self.within.is_empty() || !self.not.is_empty()
    }
}

/// The first [`MAX_LISTED`] of `items` joined by `separator`, and how many more there are.
fn listed(items: &[String], separator: &str) -> String {
    let mut text = items
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(separator);
    if items.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
    }
    text
}

/// A node's name as the example messages show it (`node1`), quoted and cut when it is not a
/// plausible one: the pod's own affinity may name anything.
fn node_shown(node: &str) -> String {
    if is_dns_subdomain(node) && node.len() <= 63 {
        node.to_owned()
    } else {
        shown(node)
    }
}

/// `text` cut to `max` characters, marked.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

#[cfg(test)]
mod tests;
