//! The Helm chart deploy/chart, the one source of the product's manifests: it lints clean, it
//! renders deploy/'s files as they are checked in (deploy/render with deploy/seed-values.yaml),
//! with its defaults every object carries the recommended labels, and the testbed runs it
//! installed. Needs the testbed's helm.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::Testbed;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
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
    // Defaults (noded finds each node's socket), the seed's and the testbed's values, and one
    // socket named for every node.
    let crio = [
        "--set",
        "noded.cri.endpoint=unix:///var/run/crio/crio.sock",
        "--set",
        "noded.cri.hostDir=/var/run/crio",
    ];
    for values in [
        &[][..],
        &["-f", "deploy/seed-values.yaml"],
        &["-f", "testbed/deploy/values.yaml"],
        &crio,
    ] {
        let mut args = vec!["lint", "--strict", "deploy/chart"];
        args.extend(values);
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
    let objects = rendered(
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,crds.keep=true,\
         webhook.certManager.enabled=true",
    );
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

/// The chart's objects, rendered as release `rel` in namespace `ns` with `--set sets`.
fn rendered(sets: &str) -> Vec<Value> {
    let mut args = vec!["template", "rel", "deploy/chart", "--namespace", "ns"];
    if !sets.is_empty() {
        args.extend(["--set", sets]);
    }
    let text = String::from_utf8(run(&helm(), &args).stdout).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    objects.into_iter().filter(|o| !o.is_null()).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// The controller container's args, env names and the pod's volumes.
fn manager(objects: &[Value]) -> (Vec<String>, Vec<String>, Vec<Value>) {
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let strings = |v: &Value, key: Option<&str>| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| key.map_or(x, |k| &x[k]).as_str().unwrap().to_owned())
            .collect()
    };
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    (
        strings(&container["args"], None),
        strings(&container["env"], Some("name")),
        volumes,
    )
}

/// By default the webhook needs no client CA (managed control planes cannot present one): no
/// ConfigMap the pods wait for; set, the pods mount it and require client certificates.
#[test]
fn the_client_ca_is_opt_in() {
    let (_, env, volumes) = manager(&rendered(""));
    assert!(
        !env.contains(&"CONTROLLER_WEBHOOK_CLIENT_CA_FILE".to_owned()),
        "{env:?}"
    );
    assert!(volumes.is_empty(), "{volumes:?}");
    let (_, env, volumes) = manager(&rendered("controller.webhookClientCaConfigMap=admins-ca"));
    assert!(
        env.contains(&"CONTROLLER_WEBHOOK_CLIENT_CA_FILE".to_owned()),
        "{env:?}"
    );
    assert_eq!(volumes[0]["configMap"]["name"], "admins-ca", "{volumes:?}");
    assert_eq!(volumes[0]["configMap"]["optional"], false);
}

/// With cert-manager: a Certificate for the webhook Service's names into the Secret the
/// controller mounts and serves (--webhook-cert-dir), signed by a self-signed Issuer of the
/// chart's or the issuer given; the registration asks the cainjector for its CA, and the
/// controller loses the rights it needed to make and register its own.
#[test]
fn cert_manager_issues_the_webhook_certificate() {
    let objects = rendered("webhook.certManager.enabled=true");
    let certificate = find(&objects, "Certificate", "rel-controller-webhook").unwrap();
    assert_eq!(certificate["metadata"]["namespace"], "ns");
    let spec = &certificate["spec"];
    assert_eq!(spec["secretName"], "rel-controller-webhook-tls");
    assert_eq!(spec["dnsNames"][0], "rel-controller-webhook.ns.svc");
    assert_eq!(
        spec["issuerRef"],
        serde_json::json!({"kind": "Issuer", "name": "rel-controller-webhook-selfsigned"})
    );
    let issuer = find(&objects, "Issuer", "rel-controller-webhook-selfsigned").unwrap();
    assert!(issuer["spec"]["selfSigned"].is_object(), "{issuer}");

    let registration = find(&objects, "MutatingWebhookConfiguration", "rel-restore").unwrap();
    assert_eq!(
        registration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "ns/rel-controller-webhook"
    );
    let (args, _, volumes) = manager(&objects);
    assert!(
        args.contains(&"--webhook-cert-dir=/etc/checkpointing/webhook-tls".to_owned()),
        "{args:?}"
    );
    assert_eq!(
        volumes[0]["secret"]["secretName"], "rel-controller-webhook-tls",
        "{volumes:?}"
    );
    let rules = |kind: &str, name: &str| find(&objects, kind, name).unwrap()["rules"].to_string();
    assert!(!rules("ClusterRole", "rel-controller").contains("mutatingwebhookconfigurations"));
    assert!(!rules("Role", "rel-controller-leader").contains("secrets"));

    let objects = rendered(
        "webhook.certManager.enabled=true,webhook.certManager.issuerRef.name=corp-ca,\
         webhook.certManager.issuerRef.kind=ClusterIssuer",
    );
    assert!(!objects.iter().any(|o| o["kind"] == "Issuer"));
    let certificate = find(&objects, "Certificate", "rel-controller-webhook").unwrap();
    assert_eq!(
        certificate["spec"]["issuerRef"],
        serde_json::json!({"kind": "ClusterIssuer", "name": "corp-ca"})
    );

    // Off (the default): none of it.
    let objects = rendered("");
    assert!(!objects.iter().any(|o| o["kind"] == "Certificate"));
    let registration = find(&objects, "MutatingWebhookConfiguration", "rel-restore").unwrap();
    assert!(registration["metadata"]["annotations"].is_null());
}

/// The testbed runs the chart-installed product (testbed/up.d/product.sh): release
/// `checkpointing` is deployed, and the restore webhook's registration the chart installed, with
/// the testbed's checkpoint repository in its match condition, is the one the leading
/// controller builds: its apply (which may change nothing but the CA, policy
/// checkpointing-controller-webhook) succeeded and gave it its CA; an upgrade then applies.
#[tokio::test]
async fn the_controller_keeps_the_registration_the_chart_installed() {
    let tb = Testbed::get();
    let kubeconfig = tb.state.join("kubeconfig");
    let kubeconfig = kubeconfig.to_str().unwrap();
    let status = run(
        &helm(),
        &[
            "status",
            "checkpointing",
            "-n",
            "kube-system",
            "--kubeconfig",
            kubeconfig,
        ],
    );
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("STATUS: deployed"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let registration: MutatingWebhookConfiguration = Api::all(tb.client().await)
        .get("checkpointing-restore")
        .await
        .unwrap();
    let condition = &registration.webhooks.as_ref().unwrap()[0]
        .match_conditions
        .as_ref()
        .unwrap()[0]
        .expression;
    assert!(condition.contains("checkpoints($|[/:@])"), "{condition}");
    for hook in registration.webhooks.iter().flatten() {
        assert!(
            hook.client_config.ca_bundle.is_some(),
            "webhook {} has no CA: the controller's apply was refused",
            hook.name
        );
    }
    let logs = tb.controller_logs();
    assert!(
        logs.contains("registered the restore admission webhook"),
        "{logs}"
    );
    assert!(
        !logs.contains("registering the restore admission webhook failed"),
        "{logs}"
    );
    // And the next `helm upgrade` after the controller applied it meets no conflict over any
    // field (the controller applies no label; Helm server-side applies its own).
    let chart = repo().join("deploy/chart");
    run(
        &helm(),
        &[
            "upgrade",
            "checkpointing",
            chart.to_str().unwrap(),
            "-n",
            "kube-system",
            "--reuse-values",
            "--kubeconfig",
            kubeconfig,
        ],
    );
}

#[test]
fn uninstalling_with_helm_first_removes_every_checkpoint_but_deploy_has_no_hook() {
    let hooks = |values: &[&str]| {
        let mut args = vec!["template", "rel", "deploy/chart"];
        args.extend(values.iter().flat_map(|v| ["-f", *v]));
        let text = String::from_utf8(run(&helm(), &args).stdout).unwrap();
        let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        objects
            .into_iter()
            .filter(|o| o["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete")
            .collect::<Vec<_>>()
    };
    let hooks_by_default = hooks(&[]);
    let kinds: Vec<&str> = hooks_by_default
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Job"
        ],
        "{hooks_by_default:?}"
    );
    let job = &hooks_by_default[5];
    let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "uninstall", "{job}");
    // Then noded's DaemonSet, by name.
    assert!(
        args.as_array()
            .unwrap()
            .contains(&Value::from("--node-daemon=default/rel-noded")),
        "{job}"
    );
    // Least privilege: no write to anything but the requests and policies it deletes, and
    // noded's DaemonSet alone.
    for rules in [&hooks_by_default[1], &hooks_by_default[3]] {
        for rule in rules["rules"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                assert!(
                    ["get", "list", "watch", "delete"].contains(&verb.as_str().unwrap()),
                    "{rule:?}"
                );
            }
        }
    }
    assert_eq!(
        hooks_by_default[3]["rules"][0]["resourceNames"],
        serde_json::json!(["rel-noded"])
    );
    assert!(hooks(&["deploy/seed-values.yaml"]).is_empty());
}
