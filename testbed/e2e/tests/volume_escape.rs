//! A tenant attacking noded through its own emptyDir: while its checkpoints are taken (noded,
//! as root, copies the volume right after each dump), its container swaps a directory of the
//! volume for links to what noded's own container holds (the checkpoints directory, the peer
//! token's) and a file for a link to the peer token, in a tight loop. Every checkpoint's
//! volumes layer, read on the node, holds only the pod's own files; links stay links.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use checkpointing::crd::{CheckpointState, ContainerCheckpointContent};
use e2e::{TestNamespace, Testbed, checkpoint, checkpoint_request, eventually, outcome, run_pod};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;

/// How many checkpoints the tenant takes of itself.
const CHECKPOINTS: usize = 15;

/// The tenant's loop: `sub` (holding `own`) is now a directory, now a link into noded's
/// checkpoints or token directory, now renamed away; `token` now the pod's file, now a link to
/// noded's peer token. Paths that exist in noded's container, not the tenant's: noded is who
/// would follow them.
const SWAPPER: &str = "mkdir -p /data/sub && echo own > /data/sub/own && echo mine > /data/token
while true; do
  mv /data/sub /data/sub.tmp
  ln -s /var/lib/kubelet/checkpoints /data/sub
  rm /data/sub
  ln -s /var/run/secrets/checkpointing /data/sub
  rm /data/sub
  mv /data/sub.tmp /data/sub
  ln -sf /var/run/secrets/checkpointing/peer-token /data/token
  echo mine > /data/token.tmp && mv -f /data/token.tmp /data/token
done
";

/// What the layer at `path` holds beyond the pod's own files, and how many of its entries are
/// links (the race caught mid-swap).
fn foreign_entries(path: &Path) -> (Vec<String>, usize) {
    let mut archive = tar::Archive::new(File::open(path).unwrap());
    let (mut foreign, mut links) = (Vec::new(), 0);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let base = name.rsplit('/').next().unwrap_or_default().to_owned();
        let kind = entry.header().entry_type();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let own = name.starts_with("checkpointing-volumes/data")
            && match kind {
                tar::EntryType::Directory => ["data", "sub", "sub.tmp"].contains(&base.as_str()),
                tar::EntryType::Regular => {
                    ["own", "token", "token.tmp"].contains(&base.as_str())
                        && (data == b"own\n" || data == b"mine\n")
                }
                tar::EntryType::Symlink => {
                    links += 1;
                    true
                }
                _ => false,
            };
        if !own {
            foreign.push(format!("{name} ({kind:?}, {} bytes)", data.len()));
        }
    }
    (foreign, links)
}

#[tokio::test]
async fn a_tenant_swapping_links_into_its_volume_gets_no_node_file_into_a_checkpoint() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "volume-escape").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "tenant"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node1"},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "swapper",
                "image": "busybox",
                "command": ["/bin/sh", "-c", SWAPPER],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }))
    .unwrap();
    run_pod(&client, ns, pod).await;
    eventually(
        "the tenant to start swapping",
        std::time::Duration::from_secs(30),
        || async {
            let out = tb.kubectl(&["exec", "-n", ns, "tenant", "--", "ls", "/data"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("token")
                .then_some(())
        },
    )
    .await;

    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), ns);
    let mut failed = BTreeMap::new();
    let (mut examined, mut links) = (0, 0);
    for i in 0..CHECKPOINTS {
        let name = format!("take-{i}");
        let cc = checkpoint(&client, ns, checkpoint_request(&name, "tenant", "swapper")).await;
        let (state, message) = outcome(&cc);
        if state != CheckpointState::Completed {
            failed.insert(name, message);
            continue;
        }
        let content = contents.get(&name).await.unwrap();
        assert_eq!(content.spec.volumes, ["data"], "{name}: the volume travels");
        let archive = content.status.unwrap().checkpoint_path.unwrap();
        let layer = Path::new(&archive).with_extension("volumes.tar");
        let layer = tb.node_path(&content.spec.node_name, layer.to_str().unwrap());
        let (foreign, caught) = foreign_entries(&layer);
        assert!(
            foreign.is_empty(),
            "{name}'s volumes layer holds what is not the tenant's: {foreign:?}"
        );
        examined += 1;
        links += caught;
    }
    println!(
        "{examined} of {CHECKPOINTS} layers examined, {links} links among them, failed: {failed:?}"
    );
    assert!(
        examined > 0,
        "no checkpoint completed, the test proves nothing: {failed:?}"
    );
}
