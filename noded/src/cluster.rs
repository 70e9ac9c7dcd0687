//! The cluster seam of the registry and the peer server: what they ask the API server (a
//! Content, a node's address and certificate, a TokenReview, a puller's pod, a peer's node's
//! pods, the live Contents, a pushed copy's credentials) and the Events they leave on pods. A
//! trait, so tests run without a cluster.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::names::{PEER_CERTIFICATE_ANNOTATION, noded_lease_name};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, Recorder};

use crate::metrics::Metrics;
use crate::outbound::{self, OutboundError, Route};
use crate::push::Credentials;

/// What the registry and the peer server ask the API server.
pub trait Cluster: Clone + Send + Sync + 'static {
    fn content(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ContainerCheckpointContent>, kube::Error>> + Send;

    /// The address peers reach `node`'s noded at (its InternalIP).
    fn node_ip(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Option<IpAddr>, kube::Error>> + Send;

    /// The SHA-256 of the certificate `node`'s peer server presents, as its noded publishes it
    /// in its Lease.
    fn peer_pin(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Option<String>, kube::Error>> + Send;

    /// A `TokenReview` of `token` for `audience`.
    fn review_token(
        &self,
        token: &str,
        audience: &str,
    ) -> impl Future<Output = Result<TokenReviewStatus, kube::Error>> + Send;

    /// The pod a registry token is bound to.
    fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Pod>, kube::Error>> + Send;

    /// The pods of `namespace` bound to `node`, in one LIST: a peer fetching for `node` gets
    /// only what one of them restores.
    fn pods_on_node(
        &self,
        namespace: &str,
        node: &str,
    ) -> impl Future<Output = Result<Vec<Pod>, kube::Error>> + Send;

    /// Every Content in the cluster, in one LIST: garbage collection decides from them what
    /// the layout and the runtime may drop.
    fn all_contents(
        &self,
    ) -> impl Future<Output = Result<Vec<ContainerCheckpointContent>, kube::Error>> + Send;

    /// The credentials of `route`'s registry, read from its Secret now: a pushed copy is
    /// fetched back with what it was pushed with.
    fn credentials(
        &self,
        route: &Route,
    ) -> impl Future<Output = Result<Option<Credentials>, OutboundError>> + Send;

    /// Publishes `event` regarding `pod`, on a task of its own: a pull does not wait for it,
    /// and a lost one is only logged (noded's log says it all too).
    fn tell(&self, pod: ObjectReference, event: Event);
}

/// Longest a look-up may take: a pull waits on it, and the kubelet gives up on a pull long
/// before the client's own read timeout (`checkpointing::daemon::READ_TIMEOUT`) would.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`, failing with a timeout error once it has taken `limit`.
pub async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        let timeout = std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from the API server within {limit:?}"),
        );
        Err(kube::Error::Service(Box::new(timeout)))
    })
}

#[derive(Clone)]
pub struct KubeCluster {
    pub client: kube::Client,
    /// Where the noded Leases are.
    pub lease_namespace: String,
    /// The only namespace whose Secrets noded reads.
    pub credentials_namespace: String,
    /// Counts the TokenReviews made: what a stranger's tokens cost the API server.
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

impl Cluster for KubeCluster {
    async fn content(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ContainerCheckpointContent>, kube::Error> {
        within(
            LOOKUP_TIMEOUT,
            Api::namespaced(self.client.clone(), namespace).get_opt(name),
        )
        .await
    }

    async fn node_ip(&self, node: &str) -> Result<Option<IpAddr>, kube::Error> {
        let node: Option<Node> =
            within(LOOKUP_TIMEOUT, Api::all(self.client.clone()).get_opt(node)).await?;
        Ok(node.as_ref().and_then(internal_ip))
    }

    async fn peer_pin(&self, node: &str) -> Result<Option<String>, kube::Error> {
        let leases = Api::namespaced(self.client.clone(), &self.lease_namespace);
        let name = noded_lease_name(node);
        let lease: Option<Lease> = within(LOOKUP_TIMEOUT, leases.get_opt(&name)).await?;
        Ok(lease
            .and_then(|l| l.metadata.annotations)
            .and_then(|mut a| a.remove(PEER_CERTIFICATE_ANNOTATION)))
    }

    async fn review_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<TokenReviewStatus, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![audience.to_owned()]),
            },
            ..Default::default()
        };
        let reviews = Api::<TokenReview>::all(self.client.clone());
        let done = within(
            LOOKUP_TIMEOUT,
            reviews.create(&PostParams::default(), &review),
        )
        .await;
        let status = done.map(|d| d.status.unwrap_or_default());
        self.metrics.token_review(match &status {
            Ok(s) if s.authenticated == Some(true) => "authenticated",
            Ok(_) => "unauthenticated",
            Err(_) => "error",
        });
        status
    }

    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, kube::Error> {
        within(
            LOOKUP_TIMEOUT,
            Api::namespaced(self.client.clone(), namespace).get_opt(name),
        )
        .await
    }

    async fn pods_on_node(&self, namespace: &str, node: &str) -> Result<Vec<Pod>, kube::Error> {
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        Ok(Api::namespaced(self.client.clone(), namespace)
            .list(&params)
            .await?
            .items)
    }

    async fn all_contents(&self) -> Result<Vec<ContainerCheckpointContent>, kube::Error> {
        let api: Api<ContainerCheckpointContent> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await?.items)
    }

    async fn credentials(&self, route: &Route) -> Result<Option<Credentials>, OutboundError> {
        outbound::credentials(&self.client, &self.credentials_namespace, route).await
    }

    fn tell(&self, pod: ObjectReference, event: Event) {
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &pod).await {
                tracing::warn!(%error, reason = %event.reason, "publishing an Event failed");
            }
        });
    }
}

/// The InternalIP a Node reports.
pub fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    #[tokio::test]
    async fn a_look_up_without_answer_fails_within_its_limit() {
        let limit = Duration::from_millis(50);
        let hung = within(limit, std::future::pending::<Result<(), kube::Error>>());
        let e = tokio::time::timeout(Duration::from_secs(5), hung)
            .await
            .expect("gave up on its own")
            .unwrap_err();
        assert!(
            e.to_string().contains("no answer from the API server"),
            "{e}"
        );
        assert_eq!(within(limit, async { Ok(7) }).await.unwrap(), 7);
    }

    #[test]
    fn peers_are_reached_at_their_internal_ip() {
        let node = |addresses: Vec<(&str, &str)>| Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .into_iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.into(),
                            address: a.into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            internal_ip(&node(vec![
                ("Hostname", "node1"),
                ("InternalIP", "10.77.0.11")
            ])),
            Some("10.77.0.11".parse().unwrap())
        );
        assert_eq!(
            internal_ip(&node(vec![("InternalIP", "fd00::11")])),
            Some("fd00::11".parse().unwrap())
        );
        assert_eq!(internal_ip(&node(vec![("ExternalIP", "1.2.3.4")])), None);
        assert_eq!(internal_ip(&Node::default()), None);
    }
}
