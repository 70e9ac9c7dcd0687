//! A checkpoint image's repository, the ContainerCheckpointContent `<namespace>/<name>` it
//! is served under, as image references name it. Pure.

use checkpointing::names::{is_dns_label, is_dns_subdomain};
use checkpointing::reference::ImageRef;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    pub namespace: String,
    pub name: String,
}

impl Repo {
    /// `None` unless both parts are valid Kubernetes names, so nothing like `..` or an empty
    /// segment ever reaches a path or an API call.
    pub fn parse(namespace: &str, name: &str) -> Option<Self> {
        (is_dns_label(namespace) && is_dns_subdomain(name)).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The repository an image reference's path (`ImageRef::repository`) names, if it is
    /// `<namespace>/<name>`.
    pub fn of_path(path: &str) -> Option<Self> {
        let (namespace, name) = path.split_once('/')?;
        Self::parse(namespace, name)
    }

    /// The repository and manifest digest of `<host>/<namespace>/<name>@sha256:<hex>`.
    pub fn of_image(image: &ImageRef) -> Option<(Self, String)> {
        Some((
            Self::of_path(&image.repository)?,
            image.sha256()?.to_owned(),
        ))
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::digest;

    fn of_reference(reference: &str) -> Option<(Repo, String)> {
        Repo::of_image(&ImageRef::parse(&format!("localhost:5050/{reference}")).ok()?)
    }

    #[test]
    fn a_reference_names_a_valid_repository_and_a_digest() {
        let repo = Repo::parse("default", "cp").unwrap();
        assert_eq!(
            of_reference(&format!("default/cp@{}", digest('a'))),
            Some((repo, digest('a')))
        );
        for bad in [
            "default/cp".to_owned(),
            "default/cp@sha256:nothex".into(),
            format!("cp@{}", digest('a')),
            format!("default/../cp@{}", digest('a')),
            format!("Default/cp@{}", digest('a')),
            format!("default/a/cp@{}", digest('a')),
        ] {
            assert_eq!(of_reference(&bad), None, "{bad}");
        }
    }
}
