use super::*;
use crate::testing::{NODED, noded_token, pod, restoring_pod};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::PodStatus;

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
        decide_peer(&noded_token("node2"), &allowed),
        Ok("node2".into()),
        "the node of the noded pod its token is bound to"
    );
    assert_eq!(
        decide_peer(&peer(Some(true), NODED), &allowed),
        Err(Denied::Unbound(NODED.into())),
        "a token bound to no pod (kubectl create token) speaks for no node"
    );
    let default_sa = "system:serviceaccount:default:default";
    assert_eq!(
        decide_peer(&peer(Some(true), default_sa), &allowed),
        Err(Denied::NotAllowed(default_sa.into()))
    );
    assert_eq!(
        decide_peer(
            &reviewed(Some(true), NODED, checkpointing::names::REGISTRY_AUDIENCE),
            &allowed
        ),
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
fn a_node_gets_only_an_image_a_pod_bound_there_was_admitted_to_restore() {
    const DIGEST: &str = "sha256:aa";
    let image = format!("localhost:5050/team-a/cp@{DIGEST}");
    let image = image.as_str();
    let decide = |pods: &[Pod], node| restoring_on(pods, node, image, DIGEST);
    let refused = |node: &str| {
        Err(Denied::NotRestoring {
            node: node.into(),
            image: image.into(),
        })
    };
    let admitted = restoring_pod("team-a", "web", "uid-web", "node2", image);
    assert_eq!(decide(std::slice::from_ref(&admitted), "node2"), Ok(()));
    assert_eq!(
        decide(std::slice::from_ref(&admitted), "node3"),
        refused("node3"),
        "another node's noded"
    );
    assert_eq!(decide(&[], "node2"), refused("node2"), "no such pod");
    // Running the image is not enough without the webhook's marker, which only it sets.
    let unmarked = pod("team-a", "web", "uid-web", "node2", image);
    assert_eq!(decide(&[unmarked], "node2"), refused("node2"));
    // The marker of another checkpoint, or another image under this one's marker.
    let mut other_digest = admitted.clone();
    other_digest.metadata.annotations = Some(
        [(
            RESTORED_FROM_DIGEST_ANNOTATION.to_owned(),
            "sha256:bb".to_owned(),
        )]
        .into(),
    );
    assert_eq!(decide(&[other_digest], "node2"), refused("node2"));
    let mut two = admitted.clone();
    two.metadata.annotations = Some(
        [(
            RESTORED_FROM_DIGEST_ANNOTATION.to_owned(),
            format!("sha256:bb,{DIGEST}"),
        )]
        .into(),
    );
    assert_eq!(decide(&[two], "node2"), Ok(()), "a pod restoring two");
    let other_image = restoring_pod(
        "team-a",
        "web",
        "uid-web",
        "node2",
        &format!("localhost:5050/team-a/other@{DIGEST}"),
    );
    assert_eq!(decide(&[other_image], "node2"), refused("node2"));
    // A finished pod pulls nothing more.
    let mut done = admitted;
    done.status = Some(PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    assert_eq!(decide(&[done], "node2"), refused("node2"));
}
