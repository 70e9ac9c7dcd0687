use super::*;
use crate::testing::{NODED, pod, pod_token};
use k8s_openapi::api::authentication::v1::UserInfo;

fn reviewed(authenticated: Option<bool>, user: &str, audience: &str) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated,
        audiences: Some(vec![audience.into()]),
        user: Some(UserInfo {
            username: Some(user.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn only_authenticated_allowed_peers_with_the_peer_audience_get_in() {
    let allowed = vec![NODED.to_owned()];
    let peer = |ok, user| reviewed(ok, user, PEER_AUDIENCE);
    assert_eq!(
        decide_peer(&peer(Some(true), NODED), &allowed),
        Ok(NODED.into())
    );
    let default_sa = "system:serviceaccount:default:default";
    assert_eq!(
        decide_peer(&peer(Some(true), default_sa), &allowed),
        Err(Denied::NotAllowed(default_sa.into()))
    );
    assert_eq!(
        decide_peer(&reviewed(Some(true), NODED, REGISTRY_AUDIENCE), &allowed),
        Err(Denied::WrongAudience(PEER_AUDIENCE)),
        "a token for the registry is no peer token"
    );
    let mut no_audiences = peer(Some(true), NODED);
    no_audiences.audiences = None;
    assert_eq!(
        decide_peer(&no_audiences, &allowed),
        Err(Denied::WrongAudience(PEER_AUDIENCE))
    );
    assert!(matches!(
        decide_peer(&peer(Some(false), NODED), &allowed),
        Err(Denied::NotAuthenticated(_))
    ));
    assert!(matches!(
        decide_peer(&peer(None, NODED), &allowed),
        Err(Denied::NotAuthenticated(_))
    ));
    let mut with_error = peer(Some(false), "");
    with_error.error = Some("token expired".into());
    assert_eq!(
        decide_peer(&with_error, &allowed).unwrap_err().to_string(),
        "the token is not authenticated: token expired"
    );
}

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
