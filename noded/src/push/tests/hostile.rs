//! Written as the attacker: a request naming the node's own services as its registry, and a
//! registry that points noded's uploads or token requests at another server or answers with
//! what it read elsewhere.

use super::*;
use crate::testing::push_registry::Auth;

/// Why pushing an image to `registry`'s repository `ns/cc` failed.
async fn refused(
    pusher: &Pusher,
    registry: &fake::Registry,
    credentials: Option<&Credentials>,
) -> PushError {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"process memory", "uid-1");
    let to = destination(registry, "ns/cc");
    pusher
        .push(&layout, &manifest, &to, "uid-1", credentials)
        .await
        .unwrap_err()
}

fn auths() -> [Auth; 2] {
    let (username, password) = ("tenant".to_owned(), "s3cret".to_owned());
    [
        Auth::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        Auth::Bearer { username, password },
    ]
}

/// Nothing at all reached `server`: no request, no token request.
fn untouched(server: &fake::Registry) -> bool {
    let state = server.state.lock().unwrap();
    state.requests.is_empty() && state.token_requests.is_empty()
}

#[tokio::test]
async fn an_upload_location_on_another_server_gets_no_request_and_no_credentials() {
    let credentials = Credentials::new("tenant", "s3cret");
    for auth in auths() {
        let registry = fake::Registry::start().await;
        let elsewhere = fake::Registry::start().await;
        registry.require(auth.clone());
        registry.state.lock().unwrap().location = Some(format!(
            "http://{}/v2/ns/cc/blobs/uploads/u1?_state=s",
            elsewhere.addr
        ));
        let pusher = Pusher::new(
            vec![registry.addr.to_string(), elsewhere.addr.to_string()],
            None,
            own(registry.addr),
        )
        .unwrap();
        let e = refused(&pusher, &registry, Some(&credentials)).await;
        assert!(
            matches!(e, PushError::ForeignLocation { .. }),
            "{auth:?}: {e}"
        );
        assert!(e.is_refusal());
        assert!(
            e.to_string()
                .contains("noded uploads only to the registry itself"),
            "{e}"
        );
        assert!(
            untouched(&elsewhere),
            "{auth:?}: {:?}",
            elsewhere.requests()
        );
        assert!(registry.state.lock().unwrap().blobs.is_empty());
    }
}

#[tokio::test]
async fn a_token_realm_over_plain_http_elsewhere_gets_no_credentials() {
    let registry = fake::Registry::start().await;
    let collector = fake::Registry::start().await;
    collector.require(auths()[1].clone());
    registry.require(auths()[1].clone());
    registry.state.lock().unwrap().realm = Some(format!("http://{}/token", collector.addr));
    // The registry is listed insecure; the realm's host is not.
    let credentials = Credentials::new("tenant", "s3cret");
    let e = refused(&pusher(&registry), &registry, Some(&credentials)).await;
    assert!(matches!(e, PushError::Realm { .. }), "{e}");
    assert!(e.is_refusal());
    assert!(untouched(&collector));
}

/// A request's own registry on the node: the admin port, the node-local registry, any
/// service bound to loopback. Refused up front, and by the connection itself should the
/// name resolve otherwise by then.
#[tokio::test]
async fn a_requests_registry_on_loopback_is_refused_and_never_connected_to() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"process memory", "uid-1");
    let node_service = fake::Registry::start().await;
    let port = node_service.addr.port();
    let pusher = Pusher::new(
        vec![node_service.addr.to_string()],
        None,
        Targets::default(),
    )
    .unwrap();
    for repository in [
        format!("127.0.0.1:{port}/x"),
        format!("localhost:{port}/x"),
        format!("[::ffff:127.0.0.1]:{port}/x"),
    ] {
        let to: Destination = repository.parse().unwrap();
        let refused = pusher.admit(&to).await.unwrap_err();
        assert!(
            matches!(
                refused,
                TargetError::Address {
                    class: targets::Class::Loopback,
                    ..
                }
            ),
            "{repository}: {refused}"
        );
        assert!(refused.to_string().starts_with("push target "), "{refused}");
        let e = pusher
            .push(&layout, &manifest, &to, "uid-1", None)
            .await
            .unwrap_err();
        assert!(matches!(e, PushError::Target(_)), "{repository}: {e}");
        assert!(e.is_refusal());
        let e = pusher
            .delete(&format!("{to}@sha256:00"), None)
            .await
            .unwrap_err();
        assert!(matches!(e, PushError::Target(_)), "{repository}: {e}");
    }
    assert!(untouched(&node_service), "{:?}", node_service.requests());
}

#[tokio::test]
async fn the_metadata_service_is_refused_without_a_packet_sent() {
    let pusher = Pusher::new(Vec::new(), None, Targets::default()).unwrap();
    for repository in ["169.254.169.254/x", "[fe80::a9fe:a9fe]/x", "0.0.0.0:80/x"] {
        let to: Destination = repository.parse().unwrap();
        let refused = pusher.admit(&to).await.unwrap_err();
        assert!(
            refused.to_string().contains("refused: it resolves to"),
            "{repository}: {refused}"
        );
    }
}

#[tokio::test]
async fn the_allow_list_leaves_only_its_hosts_and_the_clusters_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"process memory", "uid-1");
    let registry = fake::Registry::start().await;
    let targets = Targets {
        own: Some(registry.addr.to_string()),
        allowed: vec!["registry.example.com".into()],
        refuse_private: true,
    };
    let pusher = Pusher::new(vec![registry.addr.to_string()], None, targets).unwrap();
    for repository in ["registry.example.com:5000/x", "10.1.2.3/x", "8.8.8.8/x"] {
        let refused = pusher
            .admit(&repository.parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, TargetError::NotAllowed { .. }),
            "{repository}"
        );
    }
    // The cluster's own registry, on loopback here, is the admin's choice.
    let to = destination(&registry, "ns/cc");
    pusher.admit(&to).await.unwrap();
    pusher
        .push(&layout, &manifest, &to, "uid-1", None)
        .await
        .unwrap();
}

/// Whatever a "registry" answers (an internal service's page, credentials it holds) stays out
/// of the request's status: only distribution's error codes are told.
#[tokio::test]
async fn an_error_body_is_never_echoed() {
    let registry = fake::Registry::start().await;
    {
        let mut state = registry.state.lock().unwrap();
        state.manifest_status = Some(StatusCode::FORBIDDEN);
        state.error_body = Some(
            "{\"AccessKeyId\":\"AKIAEXAMPLE\",\"SecretAccessKey\":\"wJalrXUtnFEMI\"}\n".into(),
        );
    }
    let e = refused(&pusher(&registry), &registry, None).await;
    assert_eq!(
        error_chain(&e),
        format!(
            "PUT http://{}/v2/ns/cc/manifests/uid-1 answered 403 Forbidden",
            registry.addr
        )
    );
}
