//! Where a checkpoint's image may lie. The webhook writes a checkpoint's `status.image` into the
//! restored pod, and that image is only as trustworthy as whoever wrote it: a node daemon taken
//! over, or a status forged past the API's guards, could name another namespace's checkpoint,
//! or any image at all. So an image is accepted only where the checkpoint's own names put it:
//! the node-local registry's `<namespace>/<name>`, or the repository its registry settings
//! imply, compared as normalised references (noded names pushed images so). Pure.

use checkpointing::reference::ImageRef;

use super::guard::CheckpointImages;

/// Where checkpoint `name` of `namespace` may lie, as repositories (`HOST[:PORT]/PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin<'a> {
    pub namespace: &'a str,
    /// The ContainerCheckpoint (and Content) name.
    pub name: &'a str,
    /// The request's `spec.registry.repository`, when it names one.
    pub repository: Option<&'a str>,
}

impl Origin<'_> {
    /// Whether `image` (`REPOSITORY@DIGEST`) lies where this checkpoint's images lie.
    pub fn holds(&self, image: &str, checkpoints: &CheckpointImages) -> bool {
        let Ok(image) = ImageRef::parse(image) else {
            return false;
        };
        if image.digest.is_none() || image.tag.is_some() {
            return false;
        }
        let local = image.is_node_local(checkpoints.port)
            && image.repository == format!("{}/{}", self.namespace, self.name);
        local
            || self
                .pushed(checkpoints)
                .iter()
                .any(|r| r.host == image.host && r.repository == image.repository)
    }

    /// The repositories a push puts it in: the request's own, else `<r>/<namespace>/<name>`
    /// under each cluster default (`--checkpoint-repository`, noded's `--push-registry`).
    fn pushed(&self, checkpoints: &CheckpointImages) -> Vec<ImageRef> {
        match self.repository {
            Some(r) => ImageRef::parse(r.trim_end_matches('/'))
                .ok()
                .filter(|r| r.tag.is_none() && r.digest.is_none())
                .into_iter()
                .collect(),
            None => checkpoints
                .repositories
                .iter()
                .map(|r| ImageRef {
                    host: r.host.clone(),
                    repository: format!("{}/{}/{}", r.path, self.namespace, self.name),
                    tag: None,
                    digest: None,
                })
                .collect(),
        }
    }

    /// Where its images may lie, for a denial.
    pub fn expected(&self, checkpoints: &CheckpointImages) -> Vec<String> {
        let mut all = vec![format!(
            "localhost:{}/{}/{}",
            checkpoints.port, self.namespace, self.name
        )];
        all.extend(self.pushed(checkpoints).iter().map(ImageRef::name));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn checkpoints(repositories: &[&str]) -> CheckpointImages {
        CheckpointImages {
            port: 5050,
            repositories: repositories
                .iter()
                .map(|r| super::super::guard::parse_repository(r).unwrap())
                .collect(),
        }
    }

    fn origin(repository: Option<&str>) -> Origin<'_> {
        Origin {
            namespace: "team",
            name: "cp",
            repository,
        }
    }

    #[test]
    fn the_node_local_registry_holds_only_its_namespace_and_name() {
        let c = checkpoints(&[]);
        for image in [
            format!("localhost:5050/team/cp@{DIGEST}"),
            format!("127.0.0.1:5050/team/cp@{DIGEST}"),
            format!("LOCALHOST:5050/team/cp@{DIGEST}"),
        ] {
            assert!(origin(None).holds(&image, &c), "{image}");
        }
        for image in [
            format!("localhost:5050/victim/cp@{DIGEST}"),
            format!("localhost:5050/team/other@{DIGEST}"),
            format!("localhost:5050/team/cp/x@{DIGEST}"),
            format!("localhost:5051/team/cp@{DIGEST}"),
            format!("evil.example:5050/team/cp@{DIGEST}"),
            format!("registry.example/team/cp@{DIGEST}"),
            "localhost:5050/team/cp:latest".to_owned(),
            "busybox".to_owned(),
        ] {
            assert!(!origin(None).holds(&image, &c), "{image}");
        }
    }

    #[test]
    fn a_pushed_image_lies_in_the_repository_its_settings_imply() {
        let c = checkpoints(&["reg.example:5000/checkpoints"]);
        let default = format!("reg.example:5000/checkpoints/team/cp@{DIGEST}");
        assert!(origin(None).holds(&default, &c));
        let victims = format!("reg.example:5000/checkpoints/victim/cp@{DIGEST}");
        assert!(!origin(None).holds(&victims, &c));

        // A request's own repository replaces the defaults.
        let own = origin(Some("mine.example/team/app"));
        assert!(own.holds(&format!("mine.example/team/app@{DIGEST}"), &c));
        assert!(!own.holds(&default, &c));
        assert!(!own.holds(&format!("mine.example/team/other@{DIGEST}"), &c));
        // The node-local copy of any checkpoint stays acceptable.
        assert!(own.holds(&format!("localhost:5050/team/cp@{DIGEST}"), &c));
        assert_eq!(
            own.expected(&c),
            ["localhost:5050/team/cp", "mine.example/team/app"]
        );
    }

    /// noded names a pushed image by its normalised reference, whatever spelling the request
    /// or the flag used; the same image in another spelling is the same image.
    #[test]
    fn pushed_images_are_compared_normalised() {
        let c = checkpoints(&["Reg.Example:443/checkpoints"]);
        for image in [
            format!("reg.example/checkpoints/team/cp@{DIGEST}"),
            format!("REG.example:443/checkpoints/team/cp@{DIGEST}"),
        ] {
            assert!(origin(None).holds(&image, &c), "{image}");
        }
        let own = origin(Some("Index.Docker.io/team/app"));
        assert!(own.holds(&format!("docker.io/team/app@{DIGEST}"), &c));
        assert!(own.holds(&format!("team/app@{DIGEST}"), &c));
        assert!(!own.holds(&format!("docker.io/team/app:tag@{DIGEST}"), &c));
        assert!(!own.holds(&format!("docker.io/team/app/x@{DIGEST}"), &c));
        assert_eq!(own.expected(&c)[1], "docker.io/team/app");
    }
}
