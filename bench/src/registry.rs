//! Bench section 8 — Registry: a checkpoint image pushed to a registry like the ones users run
//! (HTTPS with a certificate of the testbed CA, bearer tokens from a token service:
//! `e2e::TokenRegistry`) by noded through `spec.registry`, and pulled from there by node2's
//! runtime, against `skopeo copy` of the same image to and from the same registry (MB/s); and
//! in the same run, each repetition pushed once more with the archive layer zstd-compressed
//! (`compression: Zstd`) against uncompressed (`None`): bytes pushed, push time, pull time.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use checkpointing::crd::{Compression, RegistrySpec, SecretRef};
use e2e::{Memory, RegistryUser, TokenRegistry};
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
    for kind in KINDS {
        kind.memory
            .hog(&c.tb, &c.client, &c.ns, kind.pod, FROM, plan.moved_mib)
            .await;
    }
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
    let mut runs = Runs::default();
    let mut bytes = 0;
    for rep in 0..plan.repetitions {
        for (kind, compression) in KINDS
            .iter()
            .flat_map(|k| [Compression::None, Compression::Auto].map(|w| (k, w)))
        {
            // A new checkpoint each time: the registry and node2 hold none of its blobs yet.
            let name = format!("push-{rep}-{:?}-{compression:?}", kind.memory).to_lowercase();
            let pod = kind.pod;
            let mut request = e2e::checkpoint_request(&name, pod, pod);
            request.spec.registry = Some(RegistrySpec {
                compression: Some(compression),
                repository: Some(repository.clone()),
                secret_ref: Some(SecretRef {
                    name: SECRET.to_owned(),
                }),
            });
            let before = HistogramTotals::read(FROM_METRICS, PUSH_DURATION)?;
            let bytes_before = pushed_bytes()?;
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
            let sent = pushed_bytes()? - bytes_before;
            ensure!(
                sent > 0.0,
                "{FROM}'s noded counted no bytes pushed for {name}"
            );
            let content = c.content(&cc).await?;
            let size = content
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
            let pushed = after.sum - before.sum;
            ensure!(pushed > 0.0, "{FROM}'s noded recorded a push of {pushed} s");
            let pulled = pull_on_node(c, TO, &creds, &image)?.as_secs_f64();
            let measured = runs.of(kind.memory, compression);
            measured.push_s.push(pushed);
            measured.pushed_mib.push(sent / MIB);
            measured.pull_s.push(pulled);
            if compression != Compression::None || kind.memory != Memory::Random {
                c.remove_checkpoint(&name).await?;
                continue;
            }
            bytes = size;
            // The alternatives move the uncompressed image, as the first rows always have.
            let tag = content.metadata.uid.clone().context("Content has a UID")?;
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
            runs.skopeo_push_s.push(took.as_secs_f64());
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
            runs.skopeo_pull_s.push(took.as_secs_f64());
            // noded deletes its pushed copy with the request.
            c.remove_checkpoint(&name).await?;
        }
    }
    for kind in KINDS {
        c.remove_pod(kind.pod).await?;
    }
    rows(bytes as f64, &runs)
}

/// MiB, for pushed bytes.
const MIB: f64 = (1 << 20) as f64;

/// A checkpointed pod of the section and its memory: random (nothing to compress) or text
/// (compresses to about half).
struct Kind {
    memory: Memory,
    pod: &'static str,
}

const KINDS: [Kind; 2] = [
    Kind {
        memory: Memory::Random,
        pod: "pusher",
    },
    Kind {
        memory: Memory::Text,
        pod: "pusher-text",
    },
];

/// node1's noded's bytes pushed so far, whatever the archive layer's compression.
fn pushed_bytes() -> anyhow::Result<f64> {
    pushed_total(&crate::cluster::scrape(FROM_METRICS)?)
}

/// The sum of noded's pushed-bytes counters in `metrics`, over both compressions.
fn pushed_total(metrics: &str) -> anyhow::Result<f64> {
    ["none", "zstd"].iter().try_fold(0.0, |sum, label| {
        let series = format!("checkpointing_noded_push_bytes_total{{compression=\"{label}\"}}");
        let value = crate::stats::sample_value(metrics, &series)
            .with_context(|| format!("{FROM_METRICS} has no {series}"))?;
        anyhow::Ok(sum + value)
    })
}

/// What each repetition measured of one way of pushing.
#[derive(Default)]
struct Measured {
    push_s: Vec<f64>,
    pushed_mib: Vec<f64>,
    /// node2's runtime pulling the pushed image.
    pull_s: Vec<f64>,
}

/// Every repetition's measurements: noded's pushes of each kind of memory, uncompressed and
/// as `Auto` decides, and skopeo's copies of the random one.
#[derive(Default)]
struct Runs {
    random_plain: Measured,
    random_auto: Measured,
    text_plain: Measured,
    text_auto: Measured,
    skopeo_push_s: Vec<f64>,
    skopeo_pull_s: Vec<f64>,
}

impl Runs {
    fn of(&mut self, memory: Memory, compression: Compression) -> &mut Measured {
        match (memory, compression) {
            (Memory::Random, Compression::None) => &mut self.random_plain,
            (Memory::Random, _) => &mut self.random_auto,
            (_, Compression::None) => &mut self.text_plain,
            _ => &mut self.text_auto,
        }
    }
}

/// Section 8's rows from an archive of `bytes`: our uncompressed push and pull of random
/// memory against skopeo's (MB/s, as before), then for each kind of memory `compression: Auto`
/// against `None` in pushed MiB, push time and the runtime's pull time.
fn rows(bytes: f64, runs: &Runs) -> anyhow::Result<Vec<Row>> {
    let mib = bytes / MIB;
    let mb = bytes / 1e6;
    let summary = |samples: &[f64]| Summary::of(samples).context("no measurement");
    let rate = |seconds: &[f64]| summary(&seconds.iter().map(|s| mb / s).collect::<Vec<_>>());
    let mut rows = vec![
        Row::versus(
            SECTION,
            format!(
                "{mib:.0} MiB checkpoint of random memory (archive = the image's big layer) pushed to a bearer-token TLS registry, compression: None"
            ),
            "MB/s",
            Better::Higher,
            rate(&runs.random_plain.push_s)?,
            "skopeo copy oci → token registry (TLS)",
            rate(&runs.skopeo_push_s)?,
        ),
        Row::versus(
            SECTION,
            format!("{mib:.0} MiB checkpoint pulled from it by node2's runtime, compression: None"),
            "MB/s",
            Better::Higher,
            rate(&runs.random_plain.pull_s)?,
            "skopeo copy token registry → oci (host)",
            rate(&runs.skopeo_pull_s)?,
        ),
    ];
    for (kind, auto, plain) in [
        ("random", &runs.random_auto, &runs.random_plain),
        ("text", &runs.text_auto, &runs.text_plain),
    ] {
        for (what, unit, ours, theirs) in [
            ("bytes pushed", "MiB", &auto.pushed_mib, &plain.pushed_mib),
            ("push time", "s", &auto.push_s, &plain.push_s),
            ("node2's runtime pull", "s", &auto.pull_s, &plain.pull_s),
        ] {
            rows.push(Row::versus(
                SECTION,
                format!("{mib:.0} MiB of {kind} memory, compression: Auto: {what}"),
                unit,
                Better::Lower,
                summary(ours)?,
                "the same, compression: None",
                summary(theirs)?,
            ));
        }
    }
    Ok(rows)
}

const SECTION: &str = "8 registry";

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

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(push_s: f64, pushed_mib: f64, pull_s: f64) -> Measured {
        Measured {
            push_s: vec![push_s],
            pushed_mib: vec![pushed_mib],
            pull_s: vec![pull_s],
        }
    }

    #[test]
    fn auto_is_read_against_the_uncompressed_push_of_the_same_memory() {
        let runs = Runs {
            random_plain: measured(2.0, 256.0, 4.0),
            random_auto: measured(2.1, 256.0, 4.0),
            text_plain: measured(2.0, 256.0, 4.0),
            text_auto: measured(1.0, 128.0, 2.0),
            skopeo_push_s: vec![4.0],
            skopeo_pull_s: vec![2.0],
        };
        let rows = rows(256.0 * MIB, &runs).unwrap();
        assert_eq!(rows.len(), 8);
        assert!(rows.iter().all(|r| r.section == SECTION));
        let mb = 256.0 * MIB / 1e6;
        assert_eq!(rows[0].unit, "MB/s");
        assert_eq!(rows[0].ours.median, mb / 2.0, "push rate, uncompressed");
        assert_eq!(rows[1].ours.median, mb / 4.0, "pull rate, uncompressed");
        let ratios: Vec<(&str, f64, f64)> = rows[5..]
            .iter()
            .map(|r| {
                let theirs = r.alternative.as_ref().unwrap().figure.median;
                (r.unit, r.ours.median, theirs)
            })
            .collect();
        assert_eq!(
            ratios,
            [("MiB", 128.0, 256.0), ("s", 1.0, 2.0), ("s", 2.0, 4.0)]
        );
        assert_eq!(
            rows[5].figure,
            "256 MiB of text memory, compression: Auto: bytes pushed"
        );
        assert_eq!(rows[2].ours.median, 256.0, "random memory stays as it is");
    }

    #[test]
    fn a_way_without_measurements_is_no_figure() {
        let runs = Runs {
            random_plain: measured(2.0, 256.0, 4.0),
            skopeo_push_s: vec![4.0],
            skopeo_pull_s: vec![2.0],
            ..Runs::default()
        };
        assert!(rows(MIB, &runs).is_err());
    }

    #[test]
    fn pushed_bytes_count_both_compressions() {
        let metrics = "checkpointing_noded_push_bytes_total{compression=\"none\"} 300\n\
                       checkpointing_noded_push_bytes_total{compression=\"zstd\"} 70\n";
        assert_eq!(pushed_total(metrics).unwrap(), 370.0);
        assert!(pushed_total("").is_err());
    }
}
