use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::testing::{FakeCluster, PEER_NODE, pod, pod_token};
use checkpointing::names::PEER_AUDIENCE;

#[test]
fn credentials_are_read_from_the_header() {
    let h = |s: &'static str| HeaderValue::from_static(s);
    assert_eq!(bearer(Some(&h("Bearer abc.def"))), Ok("abc.def"));
    assert_eq!(bearer(Some(&h("bearer  abc "))), Ok("abc"));
    assert_eq!(bearer(None), Err(Denied::NoCredentials));
    assert_eq!(
        bearer(Some(&h("Basic dXNlcjpwdw=="))),
        Err(Denied::NoCredentials)
    );
    assert_eq!(bearer(Some(&h("Bearer "))), Err(Denied::NoCredentials));
    assert_eq!(bearer(Some(&h("Bearer"))), Err(Denied::NoCredentials));

    // user:pw, and a password that itself holds colons
    assert_eq!(
        basic_password(Some(&h("Basic dXNlcjpwdw=="))),
        Ok("pw".into())
    );
    assert_eq!(basic_password(Some(&h("basic dTphOmI="))), Ok("a:b".into()));
    for bad in [
        "Bearer abc",
        "Basic !!!",
        "Basic dXNlcg==", // "user": no password
        "Basic dXNlcjo=", // "user:": empty password
        "Basic",
    ] {
        assert_eq!(
            basic_password(Some(&h(bad))),
            Err(Denied::NoCredentials),
            "{bad}"
        );
    }
    assert_eq!(basic_password(None), Err(Denied::NoCredentials));
}

#[test]
fn a_puller_is_a_pod_bound_token_for_the_registry_on_this_node() {
    let token = pod_token("team-a", "web", "uid-web", "node1", REGISTRY_AUDIENCE);
    assert_eq!(
        decide_puller(&token, "node1"),
        Ok(Puller {
            namespace: "team-a".into(),
            pod: "web".into(),
            uid: "uid-web".into(),
        })
    );
    assert_eq!(
        decide_puller(&token, "node2"),
        Err(Denied::NotThisNode("node2".into())),
        "a token bound to a pod on another node"
    );
    assert_eq!(
        decide_puller(
            &pod_token("team-a", "web", "u", "node1", PEER_AUDIENCE),
            "node1"
        ),
        Err(Denied::WrongAudience(REGISTRY_AUDIENCE)),
        "noded's own peer token is no pull credential"
    );
    let mut unbound = token.clone();
    unbound.user.as_mut().unwrap().extra = None;
    assert_eq!(
        decide_puller(&unbound, "node1"),
        Err(Denied::NotThisNode("node1".into())),
        "a token not bound to a pod (kubectl create token)"
    );
    let mut user = token.clone();
    user.user.as_mut().unwrap().username = Some("alice".into());
    assert_eq!(
        decide_puller(&user, "node1"),
        Err(Denied::NotAllowed("alice".into()))
    );
    assert!(matches!(
        decide_puller(&TokenReviewStatus::default(), "node1"),
        Err(Denied::NotAuthenticated(None))
    ));
}

#[test]
fn a_pod_pulls_only_the_checkpoint_image_it_runs_in_its_namespace_on_this_node() {
    let image = "localhost:5050/team-a/cp@sha256:aa";
    let puller = Puller {
        namespace: "team-a".into(),
        pod: "web".into(),
        uid: "uid-web".into(),
    };
    assert_eq!(same_namespace(&puller, "team-a"), Ok(()));
    assert_eq!(
        same_namespace(&puller, "team-b"),
        Err(Denied::OtherNamespace("team-a/web".into(), "team-b".into()))
    );
    let web = pod("team-a", "web", "uid-web", "node1", image);
    assert_eq!(pod_runs(&puller, Some(&web), "node1", image), Ok(()));
    assert_eq!(
        pod_runs(
            &puller,
            Some(&web),
            "node1",
            "localhost:5050/team-a/other@sha256:bb"
        ),
        Err(Denied::NotReferenced(
            "team-a/web".into(),
            "localhost:5050/team-a/other@sha256:bb".into()
        ))
    );
    assert_eq!(
        pod_runs(&puller, Some(&web), "node2", image),
        Err(Denied::NotThisNode("node2".into()))
    );
    let recreated = pod("team-a", "web", "uid-new", "node1", image);
    assert_eq!(
        pod_runs(&puller, Some(&recreated), "node1", image),
        Err(Denied::NotThisNode("node1".into())),
        "a pod of the same name is another pod"
    );
    assert_eq!(
        pod_runs(&puller, None, "node1", image),
        Err(Denied::NotThisNode("node1".into()))
    );
    let mut init = pod("team-a", "web", "uid-web", "node1", "busybox");
    init.spec.as_mut().unwrap().init_containers = Some(vec![Default::default()]);
    init.spec
        .as_mut()
        .unwrap()
        .init_containers
        .as_mut()
        .unwrap()[0]
        .image = Some(image.into());
    assert_eq!(pod_runs(&puller, Some(&init), "node1", image), Ok(()));
}

#[tokio::test]
async fn a_refused_token_costs_one_review_however_often_it_is_sent() {
    let cluster = Arc::new(FakeCluster::default());
    for (token, node) in [("puller", "node1"), ("elsewhere", "node2")] {
        cluster.tokens.lock().unwrap().insert(
            token.into(),
            pod_token("team-a", "web", "uid-web", node, REGISTRY_AUDIENCE),
        );
    }
    let pulls = PullAuth::default();
    let basic = |password: &str| {
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("kubelet:{password}"));
        HeaderValue::from_str(&format!("Basic {pair}")).unwrap()
    };
    let reviews = || cluster.reviews.load(Ordering::SeqCst);
    for _ in 0..3 {
        let refused = pulls
            .authenticate(&cluster, Some(&basic("forged")), "node1")
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("not authenticated"),
            "{refused}"
        );
    }
    assert_eq!(
        reviews(),
        1,
        "an identical bogus token is refused from memory"
    );
    // A token refused for its claims (bound to a pod on another node), rather than its
    // validity, too.
    for _ in 0..2 {
        let refused = pulls
            .authenticate(&cluster, Some(&basic("elsewhere")), "node1")
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("node1"), "{refused}");
    }
    assert_eq!(reviews(), 2);
    // Another bogus token is reviewed: the memory is by token, and answers nothing else.
    assert!(
        pulls
            .authenticate(&cluster, Some(&basic("forged-2")), "node1")
            .await
            .is_err()
    );
    assert_eq!(reviews(), 3);
    let puller = pulls
        .authenticate(&cluster, Some(&basic("puller")), "node1")
        .await
        .unwrap();
    assert_eq!(puller.pod, "web");

    // The peer server's gate remembers the same way.
    let peers = PeerAuth::new(vec![crate::testing::NODED.into()]);
    let bearer = HeaderValue::from_static("Bearer forged");
    for _ in 0..3 {
        assert!(peers.authenticate(&cluster, Some(&bearer)).await.is_err());
    }
    assert_eq!(reviews(), 5);
    let good = HeaderValue::from_static("Bearer good-token");
    assert_eq!(
        peers.authenticate(&cluster, Some(&good)).await.unwrap(),
        PEER_NODE
    );
}

#[test]
fn refused_tokens_are_remembered_briefly_and_boundedly() {
    let reviews = Reviews::<()>::new();
    for i in 0..MAX_REFUSED + 100 {
        reviews
            .refused
            .put(format!("{i:064x}"), Denied::NoCredentials);
    }
    assert_eq!(reviews.refused.len(), MAX_REFUSED);
    const { assert!(REFUSED_TTL.as_secs() <= 10) };
}
