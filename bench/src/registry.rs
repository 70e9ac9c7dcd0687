//! Bench section 8 — Registry: a checkpoint image pushed to a registry like the ones users run
//! (HTTPS with a certificate of the testbed CA, bearer tokens from a token service:
//! `e2e::TokenRegistry`) by noded through `spec.registry`, and pulled from there by node2's
//! runtime, against `skopeo copy` of the same image to and from the same registry. MB/s.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use checkpointing::crd::{RegistrySpec, SecretRef};
use e2e::{RegistryUser, TokenRegistry};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::cluster::{Cluster, HistogramTotals, Plan};
use crate::report::{Better, Row};
use crate::stats::Summary;

const FROM: &str = "node1";
const TO: &str = "node2";
/// The host's side of the testbed network, which the nodes reach.
const HOST_IP: &str = "10.77.0.1";
/// noded's admin port on node1's IP (the DaemonSet runs on the host network): its histogram of
/// push durations is our push time.
const FROM_METRICS: &str = "http://10.77.0.11:9811/metrics";
const PUSH_DURATION: &str = "checkpointing_noded_push_duration_seconds";
/// The bench's throwaway account on its own registry (its password goes on command lines).
const USER: RegistryUser = RegistryUser {
    name: "bench",
    password: "bench-secret",
    actions: &["pull", "push", "delete"],
};
/// The `kubernetes.io/dockerconfigjson` Secret the requests name; it goes with the namespace.
const SECRET: &str = "bench-registry";

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let pod = "pusher";
    e2e::memory_hog(&c.tb, &c.client, &c.ns, pod, FROM, plan.moved_mib).await;
    let registry = TokenRegistry::start(HOST_IP, &c.tb.state.join("pki"), &[USER]).await;
    push_secret(c, &registry).await?;
    // skopeo trusts the CA certificates (`*.crt`) of a directory.
    let cert_dir = tempfile::tempdir()?;
    std::fs::copy(&registry.ca, cert_dir.path().join("ca.crt"))
        .with_context(|| format!("copying {}", registry.ca.display()))?;
    let certs = cert_dir.path().to_string_lossy().into_owned();
    let creds = format!("{}:{}", USER.name, USER.password);
    let repository = format!("{}/bench/ours", registry.host);
    let layout = c.tb.node_path(FROM, "/var/lib/kubelet/checkpoints/oci");
    let mut rates = Rates::default();
    let mut bytes = 0;
    for rep in 0..plan.repetitions {
        // A new checkpoint each time: the registry and node2 hold none of its blobs yet.
        let name = format!("push-{rep}");
        let mut request = e2e::checkpoint_request(&name, pod, pod);
        request.spec.registry = Some(RegistrySpec {
            compression: None,
            repository: Some(repository.clone()),
            secret_ref: Some(SecretRef {
                name: SECRET.to_owned(),
            }),
        });
        let before = HistogramTotals::read(FROM_METRICS, PUSH_DURATION)?;
        // noded trusts the registry's certificate through ConfigMap checkpoint-registry-ca,
        // which testbed/up fills with the testbed CA, as deploy/ asks a cluster admin to.
        let (cc, _) = c
            .checkpoint_of(request)
            .await
            .with_context(|| format!("checkpoint pushed to {}", registry.host))?;
        let after = HistogramTotals::read(FROM_METRICS, PUSH_DURATION)?;
        ensure!(
            after.count - before.count == 1.0,
            "{FROM}'s noded counted {} pushes during {name}, not 1",
            after.count - before.count
        );
        let content = c.content(&cc).await?;
        bytes = content
            .status
            .as_ref()
            .and_then(|s| s.archive_size)
            .context("a Completed Content has a size")?;
        let image = cc
            .status
            .as_ref()
            .and_then(|s| s.image.clone())
            .context("a Completed request names its image")?;
        if !image.starts_with(&format!("{repository}@sha256:")) {
            bail!("{name} names {image}, not a digest in {repository}");
        }
        let tag = content.metadata.uid.clone().context("Content has a UID")?;
        let pushed = after.sum - before.sum;
        ensure!(pushed > 0.0, "{FROM}'s noded recorded a push of {pushed} s");
        let mb = bytes as f64 / 1e6;
        rates.push.push(mb / pushed);

        // --preserve-digests: the layer stays the uncompressed archive, as noded pushed it.
        let took = skopeo_copy(
            &c.tb.repo,
            &[
                "--dest-creds",
                &creds,
                "--dest-cert-dir",
                &certs,
                &format!("oci:{}:{tag}", layout.display()),
                &format!("docker://{}/bench/skopeo-{rep}:latest", registry.host),
            ],
        )?;
        rates.skopeo_push.push(mb / took.as_secs_f64());

        rates
            .pull
            .push(mb / pull_on_node(c, TO, &creds, &image)?.as_secs_f64());

        let target = tempfile::Builder::new()
            .prefix("bench-pull-")
            .tempdir_in("/var/tmp")?;
        let took = skopeo_copy(
            &c.tb.repo,
            &[
                "--src-creds",
                &creds,
                "--src-cert-dir",
                &certs,
                &format!("docker://{image}"),
                &format!("oci:{}:x", target.path().display()),
            ],
        )?;
        rates.skopeo_pull.push(mb / took.as_secs_f64());
        // noded deletes its pushed copy with the request.
        c.remove_checkpoint(&name).await?;
    }
    c.remove_pod(pod).await?;
    let mib = bytes as f64 / (1 << 20) as f64;
    let summary = |rates: &[f64]| Summary::of(rates).context("no measurement");
    Ok(vec![
        Row::versus(
            "8 registry",
            format!(
                "{mib:.0} MiB checkpoint (archive = the image's big layer) pushed to a bearer-token TLS registry"
            ),
            "MB/s",
            Better::Higher,
            summary(&rates.push)?,
            "skopeo copy oci → token registry (TLS)",
            summary(&rates.skopeo_push)?,
        ),
        Row::versus(
            "8 registry",
            format!("{mib:.0} MiB checkpoint pulled from it by node2's runtime"),
            "MB/s",
            Better::Higher,
            summary(&rates.pull)?,
            "skopeo copy token registry → oci (host)",
            summary(&rates.skopeo_pull)?,
        ),
    ])
}

/// MB/s of each repetition, each way.
#[derive(Default)]
struct Rates {
    push: Vec<f64>,
    skopeo_push: Vec<f64>,
    pull: Vec<f64>,
    skopeo_pull: Vec<f64>,
}

/// Creates the dockerconfigjson Secret [`SECRET`] with [`USER`]'s credentials for `registry`.
async fn push_secret(c: &Cluster, registry: &TokenRegistry) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": SECRET},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": registry.docker_config(USER.name, USER.password)},
    }))?;
    Api::<Secret>::namespaced(c.client.clone(), &c.ns)
        .create(&PostParams::default(), &secret)
        .await
        .with_context(|| format!("creating Secret {SECRET}"))?;
    Ok(())
}

/// `node`'s runtime pulls `image` (what a restore there starts with), timed; the image is
/// removed again afterwards, untimed.
fn pull_on_node(c: &Cluster, node: &str, creds: &str, image: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out =
        c.tb.node_exec(node, &["crictl", "pull", "--creds", creds, image]);
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "crictl pull {image} on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = c.tb.node_exec(node, &["crictl", "rmi", image]);
    if !out.status.success() {
        bail!(
            "crictl rmi {image} on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// `skopeo copy --preserve-digests ARGS`, timed; the testbed's policy (accept anything), as a
/// host without /etc/containers/policy.json needs one.
fn skopeo_copy(repo: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(repo.join("testbed/files/policy.json"))
        .args(["copy", "-q", "--retry-times", "0", "--preserve-digests"])
        .args(args)
        .output()
        .context("running skopeo")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "skopeo copy {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}
