//! Who the emptyDir files placed for a restored pod belong to, from the pod's spec. Pure.

use k8s_openapi::api::core::v1::Pod;

use crate::volumes::Owners;

/// Who the volumes placed for `pod`, restoring `image`, belong to. When the containers running
/// the image run as a user other than root (their `runAsUser`, else the pod's), that user, who
/// must be able to write them, with the pod's `fsGroup`, else the `runAsGroup`, else group 0.
/// When one may run as root (no `runAsUser`, or 0), the owners the layer records: root may
/// change anything in its volume anyway, and the restored processes keep their own users.
pub fn owners_of(pod: &Pod, image: &str) -> Owners {
    let Some(spec) = pod.spec.as_ref() else {
        return Owners::Recorded;
    };
    let of_pod = spec.security_context.as_ref();
    let mut users = spec
        .containers
        .iter()
        .filter(|c| c.image.as_deref() == Some(image))
        .map(|c| {
            let own = c.security_context.as_ref();
            let uid = own.and_then(|s| s.run_as_user);
            let gid = own.and_then(|s| s.run_as_group);
            (
                uid.or(of_pod.and_then(|s| s.run_as_user)),
                gid.or(of_pod.and_then(|s| s.run_as_group)),
            )
        });
    let Some(first) = users.next() else {
        return Owners::Recorded;
    };
    let id = |raw: Option<i64>| raw.and_then(|raw| u32::try_from(raw).ok());
    let not_root = |(uid, _): &(Option<i64>, Option<i64>)| id(*uid).is_some_and(|uid| uid != 0);
    if !not_root(&first) || !users.all(|user| not_root(&user)) {
        return Owners::Recorded;
    }
    let (uid, group) = first;
    let gid = of_pod.and_then(|s| s.fs_group).or(group);
    Owners::Pod {
        uid: id(uid).unwrap_or_default(),
        gid: id(gid).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;
    use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext};

    #[test]
    fn volumes_belong_to_the_pods_user_unless_it_may_run_as_root() {
        const IMAGE: &str = "localhost:5050/team-a/cp@sha256:aa";
        let restoring = |of_pod: Option<PodSecurityContext>, own: Option<SecurityContext>| {
            let mut p = pod("team-a", "web", "uid-web", "node1", IMAGE);
            let spec = p.spec.as_mut().unwrap();
            spec.security_context = of_pod;
            spec.containers[0].security_context = own;
            // A sidecar running as root does not count: it does not run the image.
            spec.containers.push(Container {
                name: "sidecar".into(),
                image: Some("busybox".into()),
                ..Default::default()
            });
            p
        };
        let pod_sc = |user, group, fs_group| PodSecurityContext {
            run_as_user: user,
            run_as_group: group,
            fs_group,
            ..Default::default()
        };
        let own_sc = |user, group| SecurityContext {
            run_as_user: user,
            run_as_group: group,
            ..Default::default()
        };
        let owners = |p: &Pod| owners_of(p, IMAGE);
        let as_pod = |uid, gid| Owners::Pod { uid, gid };
        // The pod's user, with its fsGroup, else its runAsGroup, else group 0.
        let p = restoring(Some(pod_sc(Some(1000), Some(3000), Some(2000))), None);
        assert_eq!(owners(&p), as_pod(1000, 2000));
        let p = restoring(Some(pod_sc(Some(1000), Some(3000), None)), None);
        assert_eq!(owners(&p), as_pod(1000, 3000));
        let p = restoring(Some(pod_sc(Some(1000), None, None)), None);
        assert_eq!(owners(&p), as_pod(1000, 0));
        // The container's own settings win over the pod's; fsGroup is the pod's alone.
        let p = restoring(
            Some(pod_sc(Some(1000), Some(3000), Some(2000))),
            Some(own_sc(Some(1500), Some(4000))),
        );
        assert_eq!(owners(&p), as_pod(1500, 2000));
        let p = restoring(None, Some(own_sc(Some(1500), Some(4000))));
        assert_eq!(owners(&p), as_pod(1500, 4000));
        // May run as root: the recorded owners.
        for p in [
            restoring(None, None),
            restoring(Some(pod_sc(None, Some(3000), Some(2000))), None),
            restoring(Some(pod_sc(Some(0), None, Some(2000))), None),
            restoring(
                Some(pod_sc(Some(1000), None, None)),
                Some(own_sc(Some(0), None)),
            ),
            restoring(Some(pod_sc(Some(-1), None, None)), None),
        ] {
            assert_eq!(owners(&p), Owners::Recorded, "{:?}", p.spec);
        }
        let mut no_spec = restoring(None, None);
        no_spec.spec = None;
        assert_eq!(owners(&no_spec), Owners::Recorded);
    }
}
