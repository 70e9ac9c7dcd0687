//! With leader election every replica serves the webhook (the Service may send a call to any
//! of them, and a follower stays ready), but only the leader registers it. So all replicas must
//! present a certificate signed by the one CA in the registration's `caBundle`: the first replica
//! to start makes the certificates and stores them in a Secret in the leader-election
//! namespace; the others load them from there before serving. (Only the leader serving would
//! leave no webhook for the ~15 s of a failover and need readiness to depend on leadership; a
//! certificate per replica would need every CA in the `caBundle`, written by the leader from
//! a list the replicas keep up to date. The Secret is the least moving parts.)
//!
//! The Secret records the names and addresses the certificate is for; a replica started with
//! different ones replaces it (the new leader then registers the new CA).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::info;

use crate::tls::Certificates;

/// Default name of the Secret holding the webhook's shared CA, certificate and key
/// (`--webhook-tls-secret`).
pub const DEFAULT_SECRET_NAME: &str = "checkpoint-controller-webhook-tls";
const CA: &str = "ca.crt";
const CERT: &str = "tls.crt";
const KEY: &str = "tls.key";
/// Annotation: the subject alternative names the certificate was made for.
const SANS_ANNOTATION: &str = "checkpointing.zacchaeuschok.github.io/webhook-sans";

/// The names and addresses as one comparable string.
fn sans(dns_names: &[String], ips: &[IpAddr]) -> String {
    let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
    format!("dns={};ip={}", dns_names.join(","), ips.join(","))
}

/// The certificates in `secret`, if they are for `wanted` and load.
fn from_secret(secret: &Secret, wanted: &str) -> Option<Certificates> {
    let annotations = secret.metadata.annotations.as_ref()?;
    if annotations.get(SANS_ANNOTATION).map(String::as_str) != Some(wanted) {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |key: &str| std::str::from_utf8(&data.get(key)?.0).ok();
    Certificates::from_pem(text(CA)?, text(CERT)?, text(KEY)?).ok()
}

fn to_secret(certificates: &Certificates, wanted: &str, name: &str, base: ObjectMeta) -> Secret {
    let (cert, key) = certificates.to_pem();
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut annotations = base.annotations.clone().unwrap_or_default();
    annotations.insert(SANS_ANNOTATION.to_owned(), wanted.to_owned());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(annotations),
            ..base
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (CA.to_owned(), bytes(&certificates.ca_pem)),
            (CERT.to_owned(), bytes(cert)),
            (KEY.to_owned(), bytes(key)),
        ])),
        ..Secret::default()
    }
}

/// The shared certificates: loaded from the Secret, or made and stored there. Creates and
/// replacements are conditional, so replicas starting together end up with the same ones.
pub async fn shared(
    client: kube::Client,
    namespace: &str,
    name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
) -> anyhow::Result<Certificates> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let wanted = sans(dns_names, ips);
    for _ in 0..5 {
        let current = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Secret {namespace}/{name}"))?;
        if let Some(certificates) = current.as_ref().and_then(|s| from_secret(s, &wanted)) {
            info!(secret = name, %namespace, "using the shared webhook certificates");
            return Ok(certificates);
        }
        let certificates =
            Certificates::generate(dns_names, ips).context("making the webhook's certificates")?;
        let result = match current {
            None => {
                let secret = to_secret(&certificates, &wanted, name, ObjectMeta::default());
                api.create(&PostParams::default(), &secret).await
            }
            // Keeps `resourceVersion`: refused if another replica wrote it meanwhile.
            Some(old) => {
                let secret = to_secret(&certificates, &wanted, name, old.metadata);
                api.replace(name, &PostParams::default(), &secret).await
            }
        };
        match result {
            Ok(_) => {
                info!(secret = name, %namespace, "stored new shared webhook certificates");
                return Ok(certificates);
            }
            // Another replica got there first: use theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                return Err(error).with_context(|| format!("storing Secret {namespace}/{name}"));
            }
        }
    }
    anyhow::bail!("Secret {namespace}/{name} keeps changing under us")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trip_and_names_must_match() {
        let names = vec!["svc.ns.svc".to_owned()];
        let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        let wanted = sans(&names, &ips);
        let certificates = Certificates::generate(&names, &ips).unwrap();
        let secret = to_secret(&certificates, &wanted, "tls", ObjectMeta::default());
        assert_eq!(secret.metadata.name.as_deref(), Some("tls"));
        let back = from_secret(&secret, &wanted).unwrap();
        assert_eq!(back.ca_pem, certificates.ca_pem);
        assert_eq!(back.cert_der, certificates.cert_der);

        assert!(from_secret(&secret, &sans(&names, &[])).is_none());
        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().remove(KEY);
        assert!(from_secret(&broken, &wanted).is_none());
    }
}
