//! A checkpoint image's repository, the ContainerCheckpointContent `<namespace>/<name>` it
//! is served under, and the node-local reference `<namespace>/<name>@<digest>`. Pure.

use checkpointing::names::{is_dns_label, is_dns_subdomain, parse_digest};

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

    /// The repository and manifest digest of `<namespace>/<name>@sha256:<hex>`.
    pub fn of_reference(reference: &str) -> Option<(Self, String)> {
        let (repo, digest) = reference.split_once('@')?;
        let (namespace, name) = repo.split_once('/')?;
        Some((
            Self::parse(namespace, name)?,
            parse_digest(digest)?.to_owned(),
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

    #[test]
    fn a_reference_names_a_valid_repository_and_a_digest() {
        let repo = Repo::parse("default", "cp").unwrap();
        assert_eq!(
            Repo::of_reference(&format!("default/cp@{}", digest('a'))),
            Some((repo, digest('a')))
        );
        for bad in [
            "default/cp".to_owned(),
            "default/cp@sha256:nothex".into(),
            format!("cp@{}", digest('a')),
            format!("default/../cp@{}", digest('a')),
            format!("Default/cp@{}", digest('a')),
        ] {
            assert_eq!(Repo::of_reference(&bad), None, "{bad}");
        }
    }
}
