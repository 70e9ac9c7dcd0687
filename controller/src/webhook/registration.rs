//! Registering the restore admission webhook (leader only): the
//! `MutatingWebhookConfiguration`, kept applied by server-side apply and retried with backoff.

use std::time::Duration;

use checkpointing::names::{CONTROLLER_MANAGER, RESTORE_WEBHOOK};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use super::guard::CheckpointImages;
use super::serve::PATH;
use super::workload;
use crate::kube_error::cause;
use checkpointing::backoff::backoff;

/// Default name of the `MutatingWebhookConfiguration` the controller keeps
/// (`--webhook-configuration-name`).
pub const DEFAULT_CONFIGURATION_NAME: &str = "checkpointing-restore";
/// Name of its webhook for the new pods of workloads, one of which may replace a migrating pod.
pub const MIGRATION_WEBHOOK_NAME: &str = "migrate.checkpointing.zacchaeuschok.github.io";
/// Name of its webhook for evictions, which a CheckpointPolicy may make migrate or checkpoint
/// a pod first.
pub const EVICTION_WEBHOOK_NAME: &str = "evict.checkpointing.zacchaeuschok.github.io";
/// Default Service name in front of the controller's webhook port.
pub const DEFAULT_SERVICE_NAME: &str = "checkpoint-controller-webhook";

/// How long the API server waits for an answer.
const TIMEOUT_SECONDS: i32 = 5;
/// How often the registration is applied again once it succeeded.
const REAPPLY: Duration = Duration::from_secs(300);

/// Where the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An `https://` URL, e.g. when the controller runs outside the cluster.
    Url(String),
    /// A Service in front of the controller's pods; the path is [`PATH`].
    Service { namespace: String, name: String },
}

/// The webhook registration. Pod creates and updates (ephemeral containers included) that
/// carry our annotations or one of the `checkpoints` images, failing closed: the match
/// condition keeps every other pod away, so a controller outage never blocks ordinary pods,
/// while a restore (or a checkpoint image) is never admitted unchecked. And the creates of
/// workload pods without them, failing open, for migrations; and evictions, failing open, for
/// the pods a CheckpointPolicy protects.
pub fn configuration(
    name: &str,
    endpoint: &Endpoint,
    ca_pem: &str,
    checkpoints: &CheckpointImages,
) -> MutatingWebhookConfiguration {
    let (url, service) = match endpoint {
        Endpoint::Url(url) => (Some(url.clone()), None),
        Endpoint::Service { namespace, name } => (
            None,
            Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(PATH.to_owned()),
                port: None,
            }),
        ),
    };
    let client_config = WebhookClientConfig {
        ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
        service,
        url,
    };
    let ours = checkpoints.match_condition();
    let workloads = workload::WORKLOAD_KINDS
        .map(|k| format!("o.kind == '{k}'"))
        .join(" || ");
    MutatingWebhookConfiguration {
        // No labels: whoever installed it (Helm, kubectl) owns them; a label of ours would
        // conflict with Helm's `managed-by` at the next `helm upgrade`.
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            MutatingWebhook {
                // Fail: a restore-from pod the webhook cannot check is refused (the API server
                // says the webhook could not be called) instead of starting from scratch.
                failure_policy: Some("Fail".to_owned()),
                rules: Some(vec![
                    pod_rule(&["CREATE", "UPDATE"], "pods"),
                    pod_rule(&["UPDATE"], "pods/ephemeralcontainers"),
                ]),
                match_conditions: Some(vec![MatchCondition {
                    name: "restore-or-checkpoint-image".to_owned(),
                    expression: ours.clone(),
                }]),
                ..webhook(RESTORE_WEBHOOK, &client_config)
            },
            MutatingWebhook {
                // Ignore: every new pod of a ReplicaSet or StatefulSet comes here, and none may
                // wait for the controller; a migration whose replacement was not restored says
                // so.
                failure_policy: Some("Ignore".to_owned()),
                rules: Some(vec![pod_rule(&["CREATE"], "pods")]),
                match_conditions: Some(vec![MatchCondition {
                    name: "workload-pod-without-restore".to_owned(),
                    expression: format!(
                        "has(object.metadata.ownerReferences) && \
                         object.metadata.ownerReferences.exists(o, has(o.controller) && \
                         o.controller && ({workloads})) && !({ours})"
                    ),
                }]),
                ..webhook(MIGRATION_WEBHOOK_NAME, &client_config)
            },
            MutatingWebhook {
                // Ignore: a controller that is down must not stop node maintenance; a
                // protected pod is then evicted as any pod. NoneOnDryRun: a real eviction may
                // start a PodMigration or PodCheckpoint, a dry run starts nothing.
                failure_policy: Some("Ignore".to_owned()),
                rules: Some(vec![pod_rule(&["CREATE"], "pods/eviction")]),
                side_effects: "NoneOnDryRun".to_owned(),
                ..webhook(EVICTION_WEBHOOK_NAME, &client_config)
            },
        ]),
    }
}

/// What both webhooks share.
fn webhook(name: &str, client_config: &WebhookClientConfig) -> MutatingWebhook {
    MutatingWebhook {
        name: name.to_owned(),
        admission_review_versions: vec!["v1".to_owned()],
        client_config: client_config.clone(),
        failure_policy: None,
        match_policy: Some("Equivalent".to_owned()),
        // Leaves kube-system alone where namespaces carry their name as a label (Kubernetes
        // 1.21 and later label every namespace so; before, only where someone did).
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".to_owned(),
                operator: "NotIn".to_owned(),
                values: Some(vec!["kube-system".to_owned()]),
            }]),
            match_labels: None,
        }),
        object_selector: None,
        reinvocation_policy: Some("Never".to_owned()),
        rules: None,
        side_effects: "None".to_owned(),
        timeout_seconds: Some(TIMEOUT_SECONDS),
        match_conditions: None,
    }
}

fn pod_rule(operations: &[&str], resource: &str) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".to_owned()]),
        operations: Some(operations.iter().map(|&o| o.to_owned()).collect()),
        resources: Some(vec![resource.to_owned()]),
        scope: Some("Namespaced".to_owned()),
    }
}

/// Keeps the registration applied (server-side apply): retried with backoff until it succeeds,
/// then re-applied every [`REAPPLY`], so a deleted or edited configuration (or a caBundle from an
/// earlier run) is put right. Runs until aborted.
pub async fn register(client: Client, configuration: MutatingWebhookConfiguration) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let name = configuration.metadata.name.clone().unwrap_or_default();
    let mut failures = 0;
    let mut registered = false;
    loop {
        let wait = match apply_configuration(&api, &configuration).await {
            Ok(()) => {
                if !registered {
                    info!(
                        %name,
                        "registered the restore admission webhook"
                    );
                }
                (registered, failures) = (true, 0);
                REAPPLY
            }
            Err(error) => {
                failures += 1;
                let retry = backoff(failures);
                warn!(
                    error = %cause(&error),
                    %name,
                    retry_secs = retry.as_secs(),
                    "registering the restore admission webhook failed"
                );
                retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One server-side apply of the registration.
async fn apply_configuration(
    api: &Api<MutatingWebhookConfiguration>,
    configuration: &MutatingWebhookConfiguration,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(CONTROLLER_MANAGER).force();
    let name = configuration.metadata.name.as_deref().unwrap_or_default();
    api.patch(name, &params, &Patch::Apply(configuration))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpointing::testing::FakeApi;

    /// What deploy/ configures: the node-local registry on 5050, no push registry.
    fn local() -> CheckpointImages {
        CheckpointImages {
            port: 5050,
            repositories: Vec::new(),
        }
    }
    use serde_json::json;

    #[test]
    fn registration_fails_closed_for_matched_pods_only() {
        let config = configuration(
            DEFAULT_CONFIGURATION_NAME,
            &Endpoint::Url("https://10.77.0.1:8443/mutate".into()),
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            &local(),
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(json["kind"], "MutatingWebhookConfiguration");
        assert_eq!(json["metadata"]["name"], "checkpointing-restore");
        let hook = &json["webhooks"][0];
        assert_eq!(hook["name"], RESTORE_WEBHOOK);
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(
            hook["rules"],
            json!([
                {
                    "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                    "resources": ["pods"], "scope": "Namespaced",
                },
                {
                    "apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                    "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced",
                },
            ])
        );
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system"])
        );
        // Ordinary pods never reach the webhook, so never depend on the controller.
        assert_eq!(
            hook["matchConditions"],
            json!([{
                "name": "restore-or-checkpoint-image",
                "expression": local().match_condition(),
            }])
        );
        assert_eq!(hook["clientConfig"]["url"], "https://10.77.0.1:8443/mutate");
        assert!(hook["clientConfig"].get("service").is_none());
        // caBundle is base64 of the PEM.
        assert_eq!(
            hook["clientConfig"]["caBundle"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCngKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
        );

        let config = configuration(
            DEFAULT_CONFIGURATION_NAME,
            &Endpoint::Service {
                namespace: "checkpointing".into(),
                name: "checkpoint-controller-webhook".into(),
            },
            "pem",
            &local(),
        );
        let client = serde_json::to_value(&config.webhooks.unwrap()[0].client_config).unwrap();
        assert_eq!(
            client["service"],
            json!({
                "namespace": "checkpointing",
                "name": "checkpoint-controller-webhook",
                "path": "/mutate",
            })
        );
        assert!(client.get("url").is_none());
    }

    /// What deploy/ installs: the registration without its caBundle, which the controller adds.
    const SHIPPED: &str = include_str!("../../../deploy/base/webhook.yaml");

    #[test]
    fn deploy_ships_the_registration_the_controller_keeps() {
        let mut expected = configuration(
            DEFAULT_CONFIGURATION_NAME,
            &Endpoint::Service {
                namespace: "external-checkpointer-system".into(),
                name: DEFAULT_SERVICE_NAME.into(),
            },
            "",
            &local(),
        );
        for hook in expected.webhooks.iter_mut().flatten() {
            hook.client_config.ca_bundle = None;
        }
        if std::env::var_os("PRINT_WEBHOOK").is_some() {
            println!("{}", serde_json::to_string(&expected).unwrap());
        }
        let shipped: MutatingWebhookConfiguration = serde_saphyr::from_str(SHIPPED).unwrap();
        assert_eq!(
            shipped, expected,
            "deploy/base/webhook.yaml drifted from registration::configuration"
        );
    }

    #[tokio::test]
    async fn registration_is_applied_by_the_controller() {
        let api = FakeApi::default();
        let config = configuration(
            DEFAULT_CONFIGURATION_NAME,
            &Endpoint::Url("https://h/mutate".into()),
            "pem",
            &local(),
        );
        apply_configuration(&Api::all(api.client()), &config)
            .await
            .unwrap();
        let seen = api.take();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "PATCH");
        assert_eq!(
            seen[0].uri,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/\
             checkpointing-restore?&force=true&fieldManager=checkpoint-controller"
        );
        assert_eq!(
            seen[0].content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
    }
}
