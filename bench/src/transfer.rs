//! Bench section 3 — Transfer: a checkpoint image pulled node to node through the node-local
//! registries (node2's registry fetches it from node1's noded, verifies and stores it) against
//! `skopeo copy` of the same image from one registry to another on loopback. MB/s.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::cluster::{Cluster, Plan};
use crate::report::{Better, Row};
use crate::stats::Summary;
use e2e::PULL_USER;

const FROM: &str = "node1";
const TO: &str = "node2";

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let pod = "mover";
    e2e::memory_hog(&c.tb, &c.client, &c.ns, pod, FROM, plan.moved_mib).await;
    let source = Registry::start(&c.tb.repo)?;
    let target = Registry::start(&c.tb.repo)?;
    let layout = c.tb.node_path(FROM, "/var/lib/kubelet/checkpoints/oci");
    let (mut ours, mut skopeo, mut bytes) = (Vec::new(), Vec::new(), 0);
    for rep in 0..plan.repetitions {
        // A new checkpoint each time: nothing is cached anywhere yet.
        let name = format!("move-{rep}");
        let (cc, _) = c.checkpoint(&name, pod, pod).await?;
        let content = c.content(&cc).await?;
        let status = content.status.clone().unwrap_or_default();
        bytes = status
            .archive_size
            .context("a Completed Content has a size")?;
        let image = status
            .image
            .context("a Completed Content names its image")?;
        let credential = e2e::pull_credential(&c.client, &c.ns, TO, &name, &image).await;
        ours.push(pull_on_node(c, TO, &image, &credential.token)?);
        c.remove_pod(&credential.pod).await?;

        let tag = content.metadata.uid.clone().context("Content has a UID")?;
        let repo = format!("bench/{name}:latest");
        skopeo_copy(
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{repo}", source.addr),
        )?;
        let started = Instant::now();
        skopeo_copy(
            &format!("docker://{}/{repo}", source.addr),
            &format!("docker://{}/{repo}", target.addr),
        )?;
        skopeo.push(started.elapsed());
        c.remove_checkpoint(&name).await?;
    }
    c.remove_pod(pod).await?;
    let mbps = |samples: &[Duration]| -> anyhow::Result<Summary> {
        let secs: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        Ok(Summary::of(&secs)
            .context("no measurement")?
            .map(|s| bytes as f64 / 1e6 / s))
    };
    Ok(vec![Row::versus(
        "3 transfer",
        format!(
            "{:.0} MiB image node1 → node2",
            bytes as f64 / (1 << 20) as f64
        ),
        "MB/s",
        Better::Higher,
        mbps(&ours)?,
        "skopeo copy registry → registry (loopback)",
        mbps(&skopeo)?,
    )])
}

/// Where in a node curl finds the credentials of a pull (a tmpfs over the node's /tmp hides
/// what the host writes there).
const CURL_CONFIG_DIR: &str = "/var/lib/bench-transfer";

/// Asks `node`'s local registry for the image's manifest, as its runtime would, with the
/// token of a pod there that references it: the registry answers once it holds the whole
/// image, fetched from the node that made it.
fn pull_on_node(c: &Cluster, node: &str, image: &str, token: &str) -> anyhow::Result<Duration> {
    let (repo, digest) = image
        .strip_prefix("localhost:5050/")
        .and_then(|r| r.split_once('@'))
        .with_context(|| format!("{image} is not a node-local image reference"))?;
    let url = format!("http://127.0.0.1:5050/v2/{repo}/manifests/{digest}");
    // The token goes to curl in a file of ours (0600, removed when dropped), not on a
    // command line, which every process of the host can read.
    let dir = c.tb.node_path(node, CURL_CONFIG_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut config = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    writeln!(config, "user = \"{PULL_USER}:{token}\"")?;
    let config_in_node = format!(
        "{CURL_CONFIG_DIR}/{}",
        config
            .path()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    );
    let started = Instant::now();
    let out = c.tb.node_exec(
        node,
        &[
            "curl",
            "-sSf",
            "-K",
            &config_in_node,
            "-o",
            "/dev/null",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &url,
        ],
    );
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "GET {url} on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn skopeo_copy(from: &str, to: &str) -> anyhow::Result<()> {
    // --preserve-digests: the layer stays the uncompressed archive, as in our transfer.
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--preserve-digests"])
        .args([
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ])
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo copy {from} {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Debian's docker-registry (the testbed's registry) on a free loopback port, with storage of
/// its own; stopped and removed when dropped.
struct Registry {
    addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(repo: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::Builder::new()
            .prefix("bench-registry-")
            .tempdir_in("/var/tmp")?;
        let config = std::fs::read_to_string(repo.join("testbed/files/registry.yml"))?
            .replace("@STORAGE@", &dir.path().join("storage").to_string_lossy())
            .replace("@REGISTRY@", &addr);
        let config_path: PathBuf = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting docker-registry")?;
        let registry = Self {
            addr,
            child,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return Ok(registry);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "docker-registry did not listen on {} within 10 s",
            registry.addr
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
