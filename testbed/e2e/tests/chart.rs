//! The Helm chart deploy/chart, the one source of the product's manifests: it lints clean, it
//! renders deploy/'s files as they are checked in (deploy/render with deploy/seed-values.yaml),
//! and with its defaults every object carries the recommended labels. Needs the testbed's helm,
//! not its cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The testbed's helm: `bin/helm` of the testbed cache (`$TESTBED_CACHE`, default
/// `/var/cache/ckpt-testbed`, as testbed/lib.sh has it), where the testbed installs it. Fails,
/// never skips, when it is not there.
fn helm() -> PathBuf {
    let cache = std::env::var("TESTBED_CACHE").unwrap_or_else(|_| "/var/cache/ckpt-testbed".into());
    let helm = Path::new(&cache).join("bin/helm");
    assert!(
        helm.exists(),
        "no helm at {}: the testbed installs it there",
        helm.display()
    );
    helm
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs `program args` in the repository; fails the test with its output unless it succeeds.
fn run(program: &Path, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .env("HELM", helm())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_chart_lints_clean() {
    for values in [
        None,
        Some("deploy/seed-values.yaml"),
        Some("deploy/crio/values.yaml"),
    ] {
        let mut args = vec!["lint", "--strict", "deploy/chart"];
        args.extend(values.iter().flat_map(|v| ["-f", *v]));
        run(&helm(), &args);
    }
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let sub = path.strip_prefix(dir).unwrap().to_owned();
            all.extend(files(&path).into_iter().map(|f| sub.join(f)));
        } else {
            all.push(path.strip_prefix(dir).unwrap().to_owned());
        }
    }
    all
}

#[test]
fn deploy_is_the_charts_rendering() {
    let out = tempfile::tempdir().unwrap();
    let render = repo().join("deploy/render");
    run(&render, &["--out", out.path().to_str().unwrap()]);
    let rendered = files(out.path());
    assert!(!rendered.is_empty(), "deploy/render wrote nothing");
    for file in &rendered {
        let want = std::fs::read_to_string(out.path().join(file)).unwrap();
        let path = Path::new("deploy").join(file);
        let have = std::fs::read_to_string(repo().join(&path)).unwrap_or_default();
        assert!(
            have == want,
            "{} differs from the chart's rendering (deploy/chart with deploy/seed-values.yaml): \
             run deploy/render",
            path.display()
        );
    }
    // A file the chart no longer renders would still be applied.
    for file in files(&repo().join("deploy/base")) {
        assert!(
            rendered.contains(&Path::new("base").join(&file)),
            "deploy/base/{} is not rendered from the chart any more: run deploy/render and \
             delete it",
            file.display()
        );
    }
}

#[test]
fn with_its_defaults_every_object_has_the_recommended_labels() {
    // Everything on: the opt-in objects too.
    let out = run(
        &helm(),
        &[
            "template",
            "rel",
            "deploy/chart",
            "--namespace",
            "ns",
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,crds.keep=true",
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let objects: Vec<Value> = objects.into_iter().filter(|o| !o.is_null()).collect();
    assert!(
        objects
            .iter()
            .any(|o| o["kind"] == "CustomResourceDefinition"),
        "no CRDs rendered"
    );
    let keys = [
        "name",
        "instance",
        "component",
        "part-of",
        "managed-by",
        "version",
    ]
    .map(|k| format!("app.kubernetes.io/{k}"));
    for object in &objects {
        let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
        let mut labelled = vec![("", &object["metadata"]["labels"])];
        if object["spec"]["template"]["metadata"].is_object() {
            labelled.push((
                "pod template of ",
                &object["spec"]["template"]["metadata"]["labels"],
            ));
        }
        for (part, labels) in labelled {
            for key in &keys {
                assert!(
                    labels[key].is_string(),
                    "the {part}{what} lacks label {key}: {labels}"
                );
            }
        }
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"], "rel",
            "{what}"
        );
    }
}

/// The registration's match conditions are the controller's (it may change nothing but the CA),
/// which depend on its --checkpoint-repository: with the testbed's, the chart renders what the
/// testbed's overlay ships, which controller/src/webhook/registration.rs holds to the
/// controller's own.
#[test]
fn the_webhook_matches_what_the_controller_builds_with_repositories() {
    let overlay =
        std::fs::read_to_string(repo().join("testbed/deploy/containerd/kustomization.yaml"))
            .unwrap();
    let overlay: Value = serde_saphyr::from_str(&overlay).unwrap();
    let patch = |kind: &str| -> Vec<Value> {
        let patch = overlay["patches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["target"]["kind"] == kind)
            .unwrap_or_else(|| panic!("the testbed overlay has no patch of the {kind}"));
        serde_saphyr::from_str(patch["patch"].as_str().unwrap()).unwrap()
    };
    let repositories: Vec<String> = patch("Deployment")
        .iter()
        .filter_map(|op| {
            op["value"]
                .as_str()?
                .strip_prefix("--checkpoint-repository=")
        })
        .map(str::to_owned)
        .collect();
    assert!(
        !repositories.is_empty(),
        "the testbed sets no --checkpoint-repository"
    );
    let set = format!(
        "registry.checkpointRepositories={}",
        serde_json::to_string(&repositories).unwrap()
    );
    let out = run(
        &helm(),
        &[
            "template",
            "rel",
            "deploy/chart",
            "--show-only",
            "templates/webhook.yaml",
            "--set-json",
            &set,
        ],
    );
    let rendered: Value = serde_saphyr::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    for op in patch("MutatingWebhookConfiguration") {
        let at = op["path"].as_str().unwrap();
        assert_eq!(
            rendered.pointer(at),
            Some(&op["value"]),
            "{at}: the chart's match condition (checkpointing.matchCondition in \
             deploy/chart/templates/_helpers.tpl) drifted from the controller's \
             (CheckpointImages::match_condition)"
        );
    }
}
