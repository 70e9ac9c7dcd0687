//! Bench section 3 — Transfer: a checkpoint image moved node to node (node2's noded fetches it
//! from node1's, verifies and stores it, for a pod admitted to restore from it there) against
//! `skopeo copy` of the same image from one registry to another on loopback, and against the
//! floor: a raw TCP copy of the checkpoint archive from node1's network namespace to node2's.
//! MB/s.

use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use checkpointing::reference::ImageRef;

use crate::cluster::{Cluster, HistogramTotals, Plan};
use crate::report::{Better, Row, Target};
use crate::stats::Summary;
use e2e::PULL_USER;

const FROM: &str = "node1";
const TO: &str = "node2";
/// node2's noded's admin port (deploy/base/noded.yaml), on the node's address.
const TO_METRICS: &str = "http://10.77.0.12:9811/metrics";
const FETCH_DURATION: &str = "checkpointing_noded_fetch_duration_seconds";
/// node2's address on the testbed bridge (testbed/lib.sh: node N is 10.77.0.(10 + N)).
const TO_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 12));

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let pod = "mover";
    e2e::memory_hog(&c.tb, &c.client, &c.ns, pod, FROM, plan.moved_mib).await;
    let source = Registry::start(&c.tb.repo)?;
    let target = Registry::start(&c.tb.repo)?;
    let layout = c.tb.node_path(FROM, "/var/lib/kubelet/checkpoints/oci");
    let (from_ns, to_ns) = (c.tb.node_netns(FROM), c.tb.node_netns(TO));
    let (mut ours, mut skopeo, mut floor, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), 0);
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
        // node2's noded fetches the image once: ahead of the pull, as soon as the pod the pull
        // credential is for lands there, or at the pull itself. Either way its fetch histogram
        // times exactly the transfer (fetch, verify, store), not when it happened.
        let before = HistogramTotals::read(TO_METRICS, FETCH_DURATION)?;
        let credential = e2e::pull_credential(&c.client, &c.ns, TO, &name, &image).await;
        pull_on_node(c, TO, &image, &credential.token)?;
        c.remove_pod(&credential.pod).await?;
        let after = HistogramTotals::read(TO_METRICS, FETCH_DURATION)?;
        ensure!(
            after.count - before.count == 1.0,
            "{TO}'s noded counted {} fetches of {name}, not 1",
            after.count - before.count
        );
        ours.push(Duration::from_secs_f64(after.sum - before.sum));

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

        // The same bytes over one TCP connection between the same two network namespaces.
        let path = status
            .checkpoint_path
            .context("a Completed Content names its archive")?;
        let (archive, from, to) = (c.tb.node_path(FROM, &path), from_ns.clone(), to_ns.clone());
        floor.push(
            tokio::task::spawn_blocking(move || tcp_copy(&archive, Some(&from), Some(&to), TO_IP))
                .await??,
        );
        c.remove_checkpoint(&name).await?;
    }
    c.remove_pod(pod).await?;
    let mbps = |samples: &[Duration]| -> anyhow::Result<Summary> {
        let secs: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        Ok(Summary::of(&secs)
            .context("no measurement")?
            .map(|s| bytes as f64 / 1e6 / s))
    };
    let figure = format!(
        "{:.0} MiB image node1 → node2",
        bytes as f64 / (1 << 20) as f64
    );
    let ours = mbps(&ours)?;
    // The targets: ahead of skopeo, and at least 0.8 × the raw copy.
    Ok(vec![
        Row::versus(
            "3 transfer",
            &figure,
            "MB/s",
            Better::Higher,
            ours.clone(),
            "skopeo copy registry → registry (loopback)",
            mbps(&skopeo)?,
        )
        .with_target(Target::factor(1.0)),
        Row::versus(
            "3 transfer",
            figure,
            "MB/s",
            Better::Higher,
            ours,
            "raw TCP copy node1 → node2 netns (floor)",
            mbps(&floor)?,
        )
        .with_target(Target::factor(0.8)),
    ])
}

/// Sends `file` over one TCP connection from a socket made in network namespace `from` to a
/// listener on `ip` made in `to` (`None`: the bench's own), which reads it to EOF into
/// nothing; returns the time from connect to that EOF.
fn tcp_copy(
    file: &Path,
    from: Option<&Path>,
    to: Option<&Path>,
    ip: IpAddr,
) -> anyhow::Result<Duration> {
    let mut source = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = source.metadata()?.len();
    let listener = in_netns(to, || TcpListener::bind((ip, 0)))?;
    let addr = listener.local_addr()?;
    let (started, conn) = in_netns(from, || {
        let at = Instant::now();
        Ok((at, TcpStream::connect(addr)?))
    })?;
    std::thread::scope(|s| {
        let receiver = s.spawn(move || -> std::io::Result<(u64, Instant)> {
            let (mut peer, _) = listener.accept()?;
            let received = std::io::copy(&mut peer, &mut std::io::sink())?;
            Ok((received, Instant::now()))
        });
        // File to socket: std's copy is sendfile(2). The connection closes at the block's
        // end, also on an error, so the receiver never waits for more.
        let sent = {
            let mut conn = conn;
            std::io::copy(&mut source, &mut conn).and_then(|_| conn.shutdown(Shutdown::Write))
        };
        let (received, done) = receiver
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .context("receiving the archive")?;
        sent.context("sending the archive")?;
        anyhow::ensure!(received == size, "received {received} of {size} bytes");
        Ok(done - started)
    })
}

/// `make`'s result, made on a thread of its own moved into the network namespace at `netns`
/// first (`None`: the bench's own). A socket stays in the namespace it was made in, so the
/// sockets can then be used anywhere, and no thread of the bench's runtime ever moves.
fn in_netns<T: Send>(
    netns: Option<&Path>,
    make: impl FnOnce() -> std::io::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(path) = netns {
                let ns = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .with_context(|| format!("entering network namespace {}", path.display()))?;
            }
            Ok(make()?)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The port of the node-local registry restored pods pull from.
const LOCAL_REGISTRY_PORT: u16 = 5050;

/// Where in a node curl finds the credentials of a pull (a tmpfs over the node's /tmp hides
/// what the host writes there).
const CURL_CONFIG_DIR: &str = "/var/lib/bench-transfer";

/// Asks `node`'s local registry for the image's manifest, as its runtime would, with the
/// token of a pod there that references it: the registry answers once it holds the whole
/// image, fetched from the node that made it.
fn pull_on_node(c: &Cluster, node: &str, image: &str, token: &str) -> anyhow::Result<()> {
    let (repo, digest) = ImageRef::parse(image)
        .ok()
        .filter(|r| r.is_node_local(LOCAL_REGISTRY_PORT))
        .and_then(|r| Some((r.repository.clone(), r.sha256()?.to_owned())))
        .with_context(|| format!("{image} is not a node-local image reference"))?;
    let url = format!("http://127.0.0.1:{LOCAL_REGISTRY_PORT}/v2/{repo}/manifests/{digest}");
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
    if !out.status.success() {
        bail!(
            "GET {url} on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_copy_moves_every_byte_of_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| i as u8).collect();
        file.write_all(&data).unwrap();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let took = tcp_copy(file.path(), None, None, loopback).unwrap();
        assert!(took > Duration::ZERO);
        let missing = Path::new("/nonexistent/bench-archive");
        assert!(tcp_copy(missing, None, None, loopback).is_err());
    }
}
