//! Where a node's CRI socket is, so that one noded DaemonSet serves CRI-O, containerd, k3s/RKE2
//! and microk8s nodes alike. The kubelet says which runtime it uses (the Node's
//! `containerRuntimeVersion`, `cri-o://1.34.0`); each runtime's installs put the socket in a
//! few known places under the node's run directory. Pure: the caller says which files exist.

use std::path::{Path, PathBuf};

use super::RuntimeKind;

/// Sockets relative to the node's run directory, per runtime, in the order tried. k3s and
/// RKE2 run their own containerd beside any other (a Docker install's): theirs is the
/// kubelet's when it exists. microk8s keeps its run directory elsewhere (set it as the run
/// directory; its socket is `containerd.sock` there).
fn known(kind: RuntimeKind) -> &'static [&'static str] {
    match kind {
        RuntimeKind::CriO => &["crio/crio.sock"],
        RuntimeKind::Containerd => &[
            "k3s/containerd/containerd.sock",
            "containerd/containerd.sock",
            "containerd.sock",
        ],
    }
}

/// A socket found: its path where it was looked for, and the directory holding it as the
/// node names it (the runtime names its files by the node's paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: RuntimeKind,
    pub socket: PathBuf,
    pub dir_on_node: PathBuf,
}

impl Found {
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

/// The runtime's socket under `search` (the node's run directory `on_node`, mounted there).
/// `runtime_version` is the Node's `containerRuntimeVersion`; without a scheme we know, every
/// runtime's places are tried, CRI-O's first.
pub fn find(
    runtime_version: Option<&str>,
    search: &Path,
    on_node: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Result<Found, String> {
    let named = runtime_version
        .and_then(|v| v.split_once("://"))
        .and_then(|(scheme, _)| RuntimeKind::detect(scheme));
    let kinds = match named {
        Some(kind) => vec![kind],
        None => RuntimeKind::ALL.to_vec(),
    };
    for kind in &kinds {
        if let Some(found) = find_kind(*kind, search, on_node, &exists) {
            return Ok(found);
        }
    }
    let tried: Vec<String> = kinds
        .iter()
        .flat_map(|kind| known(*kind))
        .map(|relative| on_node.join(relative).display().to_string())
        .collect();
    let runtime = runtime_version.unwrap_or("an unknown runtime");
    Err(format!(
        "no CRI socket of {runtime} on this node (looked for {}); name it with the chart's \
         noded.cri.endpoint (noded's --cri-endpoint), or its run directory with noded.cri.runDir",
        tried.join(", ")
    ))
}

/// `kind`'s socket under `search`, if one of its known places has it.
pub fn find_kind(
    kind: RuntimeKind,
    search: &Path,
    on_node: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Option<Found> {
    known(kind).iter().find_map(|relative| {
        let socket = search.join(relative);
        let parent = Path::new(relative).parent().unwrap_or(Path::new(""));
        exists(&socket).then(|| Found {
            kind,
            socket,
            dir_on_node: on_node.join(parent),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(present: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |p| present.iter().any(|q| p == Path::new(q))
    }

    fn find_in(version: Option<&str>, present: &'static [&'static str]) -> Result<Found, String> {
        find(
            version,
            Path::new("/host/run"),
            Path::new("/run"),
            only(present),
        )
    }

    #[test]
    fn the_kubelets_runtime_decides_when_both_sockets_exist() {
        let both = &[
            "/host/run/crio/crio.sock",
            "/host/run/containerd/containerd.sock",
        ];
        let crio = find_in(Some("cri-o://1.34.1"), both).unwrap();
        assert_eq!(crio.kind, RuntimeKind::CriO);
        assert_eq!(crio.endpoint(), "unix:///host/run/crio/crio.sock");
        assert_eq!(crio.dir_on_node, Path::new("/run/crio"));
        let containerd = find_in(Some("containerd://2.1.4"), both).unwrap();
        assert_eq!(containerd.kind, RuntimeKind::Containerd);
        assert_eq!(containerd.dir_on_node, Path::new("/run/containerd"));
    }

    #[test]
    fn k3s_containerd_is_preferred_to_another_containerd_on_the_node() {
        let found = find_in(
            Some("containerd://1.7.27-k3s1"),
            &[
                "/host/run/containerd/containerd.sock",
                "/host/run/k3s/containerd/containerd.sock",
            ],
        )
        .unwrap();
        assert_eq!(
            found.socket,
            Path::new("/host/run/k3s/containerd/containerd.sock")
        );
        assert_eq!(found.dir_on_node, Path::new("/run/k3s/containerd"));
    }

    #[test]
    fn a_socket_right_in_the_run_directory_is_microk8s_containerd() {
        let found = find(
            Some("containerd://1.6.28"),
            Path::new("/host/run"),
            Path::new("/var/snap/microk8s/common/run"),
            only(&["/host/run/containerd.sock"]),
        )
        .unwrap();
        assert_eq!(
            found.dir_on_node,
            Path::new("/var/snap/microk8s/common/run")
        );
    }

    #[test]
    fn an_unknown_runtime_tries_every_known_place() {
        let found = find_in(None, &["/host/run/containerd/containerd.sock"]).unwrap();
        assert_eq!(found.kind, RuntimeKind::Containerd);
        let docker = find_in(Some("docker://27.0.1"), &["/host/run/crio/crio.sock"]).unwrap();
        assert_eq!(docker.kind, RuntimeKind::CriO);
    }

    #[test]
    fn nothing_found_names_the_places_on_the_node_and_the_setting() {
        let error = find_in(Some("containerd://2.1.4"), &["/host/run/crio/crio.sock"]).unwrap_err();
        assert!(
            error.contains("no CRI socket of containerd://2.1.4"),
            "{error}"
        );
        assert!(
            error.contains("/run/k3s/containerd/containerd.sock"),
            "{error}"
        );
        assert!(error.contains("/run/containerd/containerd.sock"), "{error}");
        assert!(!error.contains("/host/run"), "{error}");
        assert!(error.contains("noded.cri.endpoint"), "{error}");
    }
}
