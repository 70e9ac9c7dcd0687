//! The webhook's flags and its start-up: certificates, listener and the registration the
//! leader keeps. The certificate is the controller's own (made, and shared through a Secret,
//! with the CA it registers), or one an issuer such as cert-manager keeps in a directory
//! (`--webhook-cert-dir`), reloaded as it is renewed; the issuer then also keeps the
//! registration's caBundle, and the controller registers nothing.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::reflector::Store;
use tracing::info;

use crate::metrics::Metrics;
use crate::tls_reload::CertDir;
use crate::webhook::guard::{self, CheckpointImages};
use crate::webhook::registration::{self, Endpoint};
use crate::webhook::serve;
use crate::{tls, tls_secret};

#[derive(Args)]
pub struct WebhookArgs {
    /// Serve the restore admission webhook over HTTPS on this address (e.g. 0.0.0.0:8443) and
    /// register it as MutatingWebhookConfiguration checkpointing-restore. Off when unset.
    #[arg(long, env = "CONTROLLER_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// DNS names of the webhook's serving certificate, comma-separated
    /// [default: <service name>.<service namespace>.svc].
    #[arg(
        long,
        env = "CONTROLLER_WEBHOOK_DNS_NAMES",
        value_delimiter = ',',
        requires = "webhook_addr"
    )]
    webhook_dns_names: Vec<String>,
    /// Serve the certificate in this directory (tls.crt, its chain, and tls.key: a
    /// kubernetes.io/tls Secret mounted, e.g. cert-manager's), reloaded when it changes, instead
    /// of making one. Whoever issues it keeps the registration's caBundle too (cert-manager's
    /// cainjector): the controller then neither makes certificates nor registers the webhook.
    #[arg(
        long,
        env = "CONTROLLER_WEBHOOK_CERT_DIR",
        requires = "webhook_addr",
        conflicts_with_all = ["webhook_dns_names", "webhook_ip_sans"]
    )]
    webhook_cert_dir: Option<PathBuf>,
    /// IP addresses of the webhook's serving certificate, comma-separated (for --webhook-url
    /// with an IP address).
    #[arg(
        long,
        env = "CONTROLLER_WEBHOOK_IP_SANS",
        value_delimiter = ',',
        requires = "webhook_addr"
    )]
    webhook_ip_sans: Vec<IpAddr>,
    /// https:// URL the API server calls (e.g. https://10.77.0.1:8443/mutate) when the
    /// controller runs outside the cluster. Without it: the Service below, path /mutate.
    #[arg(long, env = "CONTROLLER_WEBHOOK_URL", requires = "webhook_addr")]
    webhook_url: Option<String>,
    /// Namespace of the webhook's Service [default: the controller's own namespace].
    #[arg(long, env = "CONTROLLER_WEBHOOK_SERVICE_NAMESPACE")]
    webhook_service_namespace: Option<String>,
    /// Name of the webhook's Service (port 443, to this controller's --webhook-addr port).
    #[arg(
        long,
        env = "CONTROLLER_WEBHOOK_SERVICE_NAME",
        default_value = registration::DEFAULT_SERVICE_NAME
    )]
    webhook_service_name: String,
    /// Name of the MutatingWebhookConfiguration the controller keeps (the installer creates it,
    /// and the controller may patch only that one).
    #[arg(
        long,
        env = "CONTROLLER_WEBHOOK_CONFIGURATION_NAME",
        default_value = registration::DEFAULT_CONFIGURATION_NAME
    )]
    webhook_configuration_name: String,
    /// Secret in the controller's namespace where replicas share the webhook certificate they
    /// make (not with --webhook-cert-dir).
    #[arg(
        long,
        env = "CONTROLLER_WEBHOOK_TLS_SECRET",
        default_value = tls_secret::DEFAULT_SECRET_NAME
    )]
    webhook_tls_secret: String,
    /// Port of noded's node-local registry (its --registry-addr): pod images that name this
    /// port are checkpoint images, admitted only through the restore-from annotation.
    #[arg(
        long,
        env = "CHECKPOINT_REGISTRY_PORT",
        default_value_t = 5050,
        requires = "webhook_addr"
    )]
    checkpoint_registry_port: u16,
    /// Repositories, `HOST[:PORT]/PATH` and comma-separated, under which noded pushes
    /// checkpoint images (its --push-registry): pod images there are checkpoint images too,
    /// admitted only through the restore-from annotation.
    #[arg(
        long,
        env = "CHECKPOINT_REPOSITORIES",
        value_delimiter = ',',
        value_parser = guard::parse_repository,
        requires = "webhook_addr"
    )]
    checkpoint_repository: Vec<guard::Repository>,
    /// PEM bundle of the CA(s) that sign the API server's client certificate for webhooks
    /// (its AdmissionConfiguration's kubeConfigFile). When set, the webhook serves only
    /// clients presenting a certificate these signed; others fail the TLS handshake.
    #[arg(
        long,
        env = "CONTROLLER_WEBHOOK_CLIENT_CA_FILE",
        requires = "webhook_addr"
    )]
    webhook_client_ca_file: Option<PathBuf>,
}

/// The webhook's settings from its flags; `None` when it is off.
pub struct WebhookSettings {
    addr: SocketAddr,
    configuration_name: String,
    tls_secret: String,
    serving: Serving,
    endpoint: Endpoint,
    checkpoints: CheckpointImages,
    client_ca: Option<tls::ClientCa>,
}

impl WebhookArgs {
    /// `own_namespace`: where the controller runs, the Service's namespace unless configured.
    pub fn settings(self, own_namespace: &str) -> anyhow::Result<Option<WebhookSettings>> {
        let Some(addr) = self.webhook_addr else {
            return Ok(None);
        };
        let namespace = self
            .webhook_service_namespace
            .unwrap_or_else(|| own_namespace.to_owned());
        let serving = match self.webhook_cert_dir {
            Some(dir) => Serving::Dir(dir),
            None => {
                let mut dns_names = self.webhook_dns_names;
                if dns_names.is_empty() {
                    dns_names.push(format!("{}.{namespace}.svc", self.webhook_service_name));
                }
                Serving::Own {
                    dns_names,
                    ips: self.webhook_ip_sans,
                }
            }
        };
        let endpoint = match self.webhook_url {
            Some(url) => {
                let uri: axum::http::Uri = url
                    .parse()
                    .with_context(|| format!("--webhook-url {url:?} is not a URL"))?;
                anyhow::ensure!(
                    uri.scheme_str() == Some("https") && uri.host().is_some(),
                    "--webhook-url {url:?} must be an https:// URL with a host"
                );
                anyhow::ensure!(
                    uri.query().is_none() && !url.contains('#'),
                    "--webhook-url {url:?} must have no query or fragment"
                );
                Endpoint::Url(url)
            }
            None => Endpoint::Service {
                namespace,
                name: self.webhook_service_name,
            },
        };
        Ok(Some(WebhookSettings {
            addr,
            configuration_name: self.webhook_configuration_name,
            tls_secret: self.webhook_tls_secret,
            serving,
            endpoint,
            checkpoints: CheckpointImages {
                port: self.checkpoint_registry_port,
                repositories: self.checkpoint_repository,
            },
            client_ca: self
                .webhook_client_ca_file
                .as_deref()
                .map(read_client_ca)
                .transpose()?,
        }))
    }
}

/// Where the serving certificate comes from.
#[derive(Debug)]
enum Serving {
    /// Made by the controller for these names and addresses, its CA registered by the leader.
    Own {
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    },
    /// Kept in this directory by an issuer that also keeps the registration's caBundle.
    Dir(PathBuf),
}

fn read_client_ca(path: &Path) -> anyhow::Result<tls::ClientCa> {
    let flag = || format!("--webhook-client-ca-file {}", path.display());
    let pem = std::fs::read(path).with_context(|| format!("reading {}", flag()))?;
    tls::ClientCa::from_pem(&pem).with_context(|| format!("loading the CAs of {}", flag()))
}

/// Makes the webhook's certificates (or, with `shared_in`, takes them from the Secret there,
/// shared by all replicas; or serves those of `--webhook-cert-dir`) and serves it until
/// `shutdown`, placing restores by the noded `leases` (listed once `leases_listed`). Returns
/// the server and, unless an issuer keeps it, the registration for [`registration::register`].
pub async fn start_webhook(
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    settings: WebhookSettings,
    (leases, leases_listed): (Store<Lease>, Arc<AtomicBool>),
    shared_in: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(
    tokio::task::JoinHandle<std::io::Result<()>>,
    Option<MutatingWebhookConfiguration>,
)> {
    let client_ca = settings.client_ca.as_ref();
    let (config, configuration, reloading) = match &settings.serving {
        Serving::Own { dns_names, ips } => {
            let certificates = match shared_in {
                Some(namespace) => {
                    let secret = &settings.tls_secret;
                    tls_secret::shared(client.clone(), namespace, secret, dns_names, ips).await?
                }
                None => tls::Certificates::generate(dns_names, ips)
                    .context("making the webhook's certificates")?,
            };
            let configuration = registration::configuration(
                &settings.configuration_name,
                &settings.endpoint,
                &certificates.ca_pem,
                &settings.checkpoints,
            );
            (
                certificates.server_config(client_ca)?,
                Some(configuration),
                None,
            )
        }
        Serving::Dir(dir) => {
            let certs = Arc::new(
                CertDir::load(dir)
                    .context("loading the webhook's certificate (--webhook-cert-dir)")?,
            );
            let config = checkpointing::tls::server_config_resolving(certs.clone(), client_ca)
                .context("building the TLS server configuration")?;
            (config, None, Some(certs.keep_reloading()))
        }
    };
    let tcp = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding the webhook address {}", settings.addr))?;
    let listener =
        tls::TlsListener::new(tcp, config).context("listening for webhook connections")?;
    let router = serve::router(serve::Webhook {
        client: client.clone(),
        metrics: metrics.clone(),
        checkpoints: settings.checkpoints.clone(),
        leases,
        leases_listed,
        callers_authenticated: settings.client_ca.is_some(),
    });
    let server = tokio::spawn(async move {
        let reloading = reloading.map(tokio::spawn);
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        reloading.inspect(tokio::task::JoinHandle::abort);
        served
    });
    info!(
        addr = %settings.addr,
        serving = ?settings.serving,
        endpoint = ?settings.endpoint,
        client_certificate_required = settings.client_ca.is_some(),
        "serving the restore admission webhook"
    );
    if settings.client_ca.is_none() {
        info!(
            "no --webhook-client-ca-file: any caller that reaches the webhook can call it; its \
             answers change nothing, and evictions start migrations and checkpoints only on \
             cordoned nodes (README.md, \"Security model\")"
        );
    }
    Ok((server, configuration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    fn settings(client_ca_file: &Path) -> anyhow::Result<Option<WebhookSettings>> {
        Cli::try_parse_from([
            "controller".as_ref(),
            "--webhook-addr=127.0.0.1:8443".as_ref(),
            "--webhook-client-ca-file".as_ref(),
            client_ca_file.as_os_str(),
        ])
        .unwrap()
        .webhook
        .settings("ns")
    }

    #[test]
    fn a_client_ca_file_without_a_usable_certificate_is_refused_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let key_only = dir.path().join("key-only.pem");
        let certificates = tls::Certificates::generate(&["x".to_owned()], &[]).unwrap();
        let (cert, key) = certificates.to_pem();
        std::fs::write(&key_only, key).unwrap();
        let bad_pem = dir.path().join("bad.pem");
        std::fs::write(&bad_pem, cert.replace("\n", "\n!")).unwrap();
        let missing = dir.path().join("missing.pem");
        for (path, why) in [
            (&key_only, "no certificate in it"),
            (&bad_pem, "not PEM"),
            (&missing, "No such file"),
        ] {
            let error = format!("{:#}", settings(path).err().unwrap());
            assert!(error.contains("--webhook-client-ca-file"), "{error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(error.contains(why), "{error}");
        }

        let good = dir.path().join("ca.pem");
        std::fs::write(&good, crate::tls::tests::client_ca_and_identity().0).unwrap();
        assert!(settings(&good).unwrap().unwrap().client_ca.is_some());
    }

    #[test]
    fn a_cert_dir_replaces_the_controllers_own_certificate() {
        let settings = Cli::try_parse_from([
            "controller",
            "--webhook-addr=127.0.0.1:8443",
            "--webhook-cert-dir=/etc/tls",
        ])
        .unwrap()
        .webhook
        .settings("ns")
        .unwrap()
        .unwrap();
        assert!(matches!(&settings.serving, Serving::Dir(d) if d == Path::new("/etc/tls")));
        // The names are the issuer's to choose.
        let error = Cli::try_parse_from([
            "controller",
            "--webhook-addr=127.0.0.1:8443",
            "--webhook-cert-dir=/etc/tls",
            "--webhook-dns-names=x.ns.svc",
        ])
        .err()
        .unwrap();
        assert!(error.to_string().contains("cannot be used with"), "{error}");
        let error = Cli::try_parse_from(["controller", "--webhook-cert-dir=/etc/tls"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("--webhook-addr"), "{error}");
    }

    #[test]
    fn the_client_ca_flag_needs_the_webhook() {
        let error = Cli::try_parse_from(["controller", "--webhook-client-ca-file", "/ca.crt"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("--webhook-addr"), "{error}");
    }
}
