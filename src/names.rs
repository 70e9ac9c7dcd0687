//! Names shared by the controller, noded and the tests (changing one is an API change), and the
//! grammar the names we accept must follow.

/// API group of our custom resources.
pub const GROUP: &str = "checkpointing.zacchaeuschok.github.io";

/// Pod annotation naming the ContainerCheckpoint (same namespace) a pod restores from.
pub const RESTORE_FROM_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/restore-from";

/// Pod annotation the restore webhook adds: the digest (`sha256:<hex>`) of the checkpoint image
/// the pod's container was rewritten to.
pub const RESTORED_FROM_DIGEST_ANNOTATION: &str =
    "checkpointing.zacchaeuschok.github.io/restored-from-digest";

/// Annotation (`"true"`) on a ContainerCheckpoint that retention never deletes.
pub const PINNED_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/pinned";

/// Annotation on a ContainerCheckpointContent whose `spec.holdSource` froze its container:
/// set (by the controller, when the migration it served failed) to have noded thaw it.
pub const RELEASE_SOURCE_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/release-source";

/// Label on a ContainerCheckpointContent naming the node whose noded owns it. Labels, not field
/// selectors: field selectors on custom resources need Kubernetes 1.31.
pub const NODE_LABEL: &str = "checkpointing.zacchaeuschok.github.io/node";

/// The well-known node label that pins a pod to one node: the kubelet sets it to its hostname,
/// normally the node's name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The Deployment controller stamps a ReplicaSet and its pods with this hash of the template
/// (the ReplicaSet selects its pods by it).
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Finalizer noded puts on a Content so its archive and image blobs go before the object does.
pub const ARCHIVE_FINALIZER: &str = "checkpointing.zacchaeuschok.github.io/archive";

/// Labels the kubelet puts on every CRI sandbox and container.
pub mod kubelet {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
}

/// Manifest annotations that mark an OCI image as a checkpoint image for the runtimes
/// (checkpointctl's `org.criu.checkpoint.*` metadata keys).
pub mod checkpoint_image {
    /// CRI-O restores an image carrying this annotation.
    pub const CRIO_CONTAINER_NAME: &str = "io.kubernetes.cri-o.annotations.checkpoint.name";
    /// containerd restores an image carrying this annotation.
    pub const CONTAINER_NAME: &str = "org.criu.checkpoint.container.name";
    pub const POD_NAME: &str = "org.criu.checkpoint.pod.name";
    pub const POD_NAMESPACE: &str = "org.criu.checkpoint.pod.namespace";
    pub const ROOTFS_IMAGE_NAME: &str = "org.criu.checkpoint.rootfsImageName";
    pub const ROOTFS_IMAGE_ID: &str = "org.criu.checkpoint.rootfsImageID";
    pub const RUNTIME_NAME: &str = "org.criu.checkpoint.runtime.name";
    pub const RUNTIME_VERSION: &str = "org.criu.checkpoint.runtime.version";
    pub const ENGINE_NAME: &str = "org.criu.checkpoint.engine.name";
    /// Our annotation (value `volumes`) on the layer that holds the checkpoint's emptyDir
    /// volumes, entries `checkpointing-volumes/<volume>/…`; the archive is the first layer.
    pub const VOLUMES_LAYER: &str = "checkpointing.zacchaeuschok.github.io/layer";
    /// Standard OCI annotation naming a manifest's tag inside an image layout's index.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// Server-side-apply field managers: one per binary, so every field has exactly one writer.
pub const CONTROLLER_MANAGER: &str = "checkpoint-controller";
pub const NODED_MANAGER: &str = "checkpoint-noded";

/// Prefix of a noded Lease's name; the rest is the node's name.
const NODED_LEASE_PREFIX: &str = "checkpoint-noded-";

/// `<prefix>-<pod>-<8 of its UID>`, the name of what the controller starts for one pod (an
/// eviction's or a lost node's migration): the pod's name is cut to 40 characters, so the
/// PodCheckpoint and ContainerCheckpoints named after it stay valid names.
pub fn for_pod(prefix: &str, pod: &str, uid: &str) -> String {
    let pod: String = pod.chars().take(40).collect();
    let uid: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("{prefix}-{}-{uid}", pod.trim_end_matches(['-', '.']))
}

/// noded proves it runs on a node by renewing this Lease (in its lease namespace); the controller
/// refuses requests for nodes without a live one.
pub fn noded_lease_name(node: &str) -> String {
    format!("{NODED_LEASE_PREFIX}{node}")
}

/// The node a noded Lease is for, from its name; `None` for any other Lease (the leader
/// election's may share the namespace).
pub fn noded_lease_node(lease: &str) -> Option<&str> {
    lease
        .strip_prefix(NODED_LEASE_PREFIX)
        .filter(|node| !node.is_empty())
}

/// Namespace of the noded Leases unless configured otherwise: one of their own (deploy/ makes
/// it), so noded's right to write Leases reaches no one else's.
pub const DEFAULT_LEASE_NAMESPACE: &str = "checkpoint-node-leases";

/// The only namespace whose Secrets noded reads, unless configured otherwise
/// (`--credentials-namespace` of both binaries): the controller's copies of the registry
/// Secrets requests name, and the cluster's default push Secret (`--push-secret`).
pub const DEFAULT_CREDENTIALS_NAMESPACE: &str = "checkpoint-credentials";

/// Labels on a credentials copy: the namespace of the request it was copied for (its node is
/// under [`NODE_LABEL`]).
pub const NAMESPACE_LABEL: &str = "checkpointing.zacchaeuschok.github.io/namespace";

/// Audience of the pod-bound ServiceAccount tokens the kubelet hands our credential provider
/// for pulls from the node-local registry; the registry admits no other token.
pub const REGISTRY_AUDIENCE: &str = "checkpointing.zacchaeuschok.github.io/registry";

/// Audience of the token one noded presents to another's peer server.
pub const PEER_AUDIENCE: &str = "checkpointing.zacchaeuschok.github.io/peer";

/// Annotation on a noded's Lease: the SHA-256 (hex) of the certificate its peer server
/// presents. Peers accept exactly that certificate; only that node's noded writes its Lease.
pub const PEER_CERTIFICATE_ANNOTATION: &str =
    "checkpointing.zacchaeuschok.github.io/peer-certificate-sha256";

/// Annotation on a noded's Lease while its node's runtime can restore no checkpoint (neither
/// container by container nor CRI `RestorePod`): why, in words. Migrations refuse such a target
/// up front.
pub const CANNOT_RESTORE_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/cannot-restore";

/// Annotation on a noded's Lease: its node's container runtime by CRI name (`cri-o`,
/// `containerd`). A checkpoint restores only on a runtime of its own family.
pub const RUNTIME_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/runtime";

/// Annotation on a noded's Lease: its node's CPU architecture as Go (and the Node label
/// `kubernetes.io/arch`) spells it: `amd64`, `arm64`. A checkpoint holds machine code and
/// memory of one architecture.
pub const ARCH_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/arch";

/// Annotation on a noded's Lease: its node's latest prerequisite checks as JSON (`runtime`
/// `{name, version}`, `criu`, `checked` (RFC 3339), `checks` `[{name, state, detail}]`), which
/// `kubectl checkpoint doctor` reads.
pub const PREREQUISITES_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/prerequisites";

/// Name of the restore webhook in the controller's MutatingWebhookConfiguration (whose own name
/// follows the release); the API server names it in every denial.
pub const RESTORE_WEBHOOK: &str = "restore.checkpointing.zacchaeuschok.github.io";

/// Label on the pods and ContainerCheckpoint a `kubectl checkpoint doctor --trial` creates,
/// valued with the trial's name, by which it deletes them.
pub const DOCTOR_TRIAL_LABEL: &str = "checkpointing.zacchaeuschok.github.io/doctor-trial";

/// A Rust architecture name (`std::env::consts::ARCH`) as Go spells it, which is how
/// Kubernetes (and OCI images) name a node's architecture; unknown ones unchanged.
pub fn goarch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

/// The architecture of the machine this runs on, as [`goarch`] spells it: noded runs on its
/// node, so what its checkpoints hold.
pub fn machine_arch() -> &'static str {
    goarch(std::env::consts::ARCH)
}

/// Longest RFC 1123 label (namespace, container name).
pub const DNS_LABEL_MAX: usize = 63;
/// Longest RFC 1123 subdomain (pod, node and most object names).
pub const DNS_SUBDOMAIN_MAX: usize = 253;

/// RFC 1123 label: what Kubernetes requires of namespace and container names.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS_LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what Kubernetes requires of pod and most other object names.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= DNS_SUBDOMAIN_MAX && s.split('.').all(is_dns_label)
}

/// `sha256:<64 lowercase hex>`, the only digests we make or accept.
pub fn parse_digest(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
}

/// Label on the pod a PodMigration restores, naming that PodMigration (same namespace).
pub const MIGRATION_LABEL: &str = "checkpointing.zacchaeuschok.github.io/migration";

/// Label on a ContainerCheckpoint made for a PodCheckpoint, naming it (same namespace).
pub const POD_CHECKPOINT_LABEL: &str = "checkpointing.zacchaeuschok.github.io/pod-checkpoint";

/// Label on a PodCheckpoint a CheckpointPolicy made, naming that policy (same namespace):
/// the policy's retention counts and deletes what carries it.
pub const POLICY_LABEL: &str = "checkpointing.zacchaeuschok.github.io/policy";

/// Label on a PodCheckpoint a CheckpointPolicy made, naming its pod (only when the pod's name
/// fits a label value, 63 characters; the policy itself goes by `spec.podName`).
pub const POLICY_POD_LABEL: &str = "checkpointing.zacchaeuschok.github.io/pod";

/// Label on a PodMigration or PodCheckpoint the controller started for an eviction of a pod a
/// CheckpointPolicy protects, naming that pod's UID.
pub const EVICTION_LABEL: &str = "checkpointing.zacchaeuschok.github.io/evicted-pod";

/// Label on a PodMigration the controller started to restore a pod whose node is lost (a
/// CheckpointPolicy's `onNodeLoss`), naming that pod's UID.
pub const LOST_POD_LABEL: &str = "checkpointing.zacchaeuschok.github.io/lost-pod";

/// The taint an administrator puts on a node that is shut down for good (Kubernetes'
/// non-graceful node shutdown): its pods are gone.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Pod annotation listing (comma-separated) the emptyDir volumes a checkpoint leaves behind;
/// every other emptyDir a checkpointed container mounts travels with it.
pub const SKIP_VOLUMES_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/skip-volumes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noded_lease_names_its_node_and_no_other_lease_does() {
        assert_eq!(noded_lease_node(&noded_lease_name("node1")), Some("node1"));
        assert_eq!(noded_lease_node("checkpoint-noded-"), None);
        assert_eq!(noded_lease_node("checkpoint-controller"), None);
    }
}
