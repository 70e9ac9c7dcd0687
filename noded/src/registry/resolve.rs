//! Which image a request may be answered with, decided from its ContainerCheckpointContent
//! alone: the manifest digest a reference resolves to, and where that image comes from. Pure.

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::names::parse_digest;

use super::route::Reference;

/// Why a repository has no image to serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("checkpoint {0} has no image yet")]
    NotReady(String),
    #[error("checkpoint {repo} is image {image}, not {wanted}")]
    OtherReference {
        repo: String,
        image: String,
        wanted: String,
    },
    #[error("checkpoint {repo} belongs to node {node}, which should hold its image but does not")]
    Lost { repo: String, node: String },
    #[error("checkpoint {0} names no node")]
    NoNode(String),
    #[error(
        "checkpoint images are served by digest only, not by tag {tag:?} (the checkpoint's status.image names the digest)"
    )]
    Tag { tag: String },
}

fn repo_of(content: &ContainerCheckpointContent) -> String {
    format!(
        "{}/{}",
        content.metadata.namespace.as_deref().unwrap_or_default(),
        content.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The layout tag of a Content's image: its UID.
pub fn tag_of(content: &ContainerCheckpointContent) -> &str {
    content.metadata.uid.as_deref().unwrap_or_default()
}

/// The image reference and manifest digest of a Content whose image is ready.
pub fn ready_image(content: &ContainerCheckpointContent) -> Result<(&str, &str), Unavailable> {
    let not_ready = || Unavailable::NotReady(repo_of(content));
    let image = content
        .status
        .as_ref()
        .filter(|s| s.ready)
        .and_then(|s| s.image.as_deref())
        .ok_or_else(not_ready)?;
    let digest = image
        .rsplit_once('@')
        .and_then(|(_, d)| parse_digest(d))
        .ok_or_else(not_ready)?;
    Ok((image, digest))
}

/// The manifest digest a request for `reference` in `content`'s repository may be answered
/// with: the one in the Content's `status.image`, asked for by that digest. Never by tag: the
/// restore webhook admits a pod for exactly one digest, and a tag says nothing about which.
pub fn wanted_digest(
    content: &ContainerCheckpointContent,
    reference: &Reference,
) -> Result<String, Unavailable> {
    let (image, digest) = ready_image(content)?;
    match reference {
        Reference::Digest(d) if d == digest => Ok(digest.to_owned()),
        Reference::Digest(d) => Err(Unavailable::OtherReference {
            repo: repo_of(content),
            image: image.to_owned(),
            wanted: d.clone(),
        }),
        Reference::Tag(tag) => Err(Unavailable::Tag { tag: tag.clone() }),
    }
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The local layout has it.
    Local,
    /// Fetch it from the noded on this node.
    Peer(String),
}

/// Where `content`'s image comes from on `this_node`, given whether the local layout holds it.
pub fn source(
    content: &ContainerCheckpointContent,
    this_node: &str,
    held: bool,
) -> Result<Source, Unavailable> {
    let node = &content.spec.node_name;
    if held {
        Ok(Source::Local)
    } else if node.is_empty() {
        Err(Unavailable::NoNode(repo_of(content)))
    } else if node == this_node {
        Err(Unavailable::Lost {
            repo: repo_of(content),
            node: node.clone(),
        })
    } else {
        Ok(Source::Peer(node.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{content, digest};

    #[test]
    fn only_the_checkpoints_own_digest_is_wanted_never_a_tag() {
        let image = format!("localhost:5050/default/cp@{}", digest('a'));
        let c = content("node1", Some(image.clone()));
        assert_eq!(
            wanted_digest(&c, &Reference::Digest(digest('a'))),
            Ok(digest('a'))
        );
        assert_eq!(ready_image(&c), Ok((image.as_str(), digest('a').as_str())));
        assert!(matches!(
            wanted_digest(&c, &Reference::Digest(digest('b'))),
            Err(Unavailable::OtherReference { .. })
        ));
        for tag in ["latest", "uid-1", "v1"] {
            assert_eq!(
                wanted_digest(&c, &Reference::Tag(tag.into())),
                Err(Unavailable::Tag { tag: tag.into() })
            );
        }
        let pending = content("node1", None);
        assert_eq!(
            wanted_digest(&pending, &Reference::Digest(digest('a'))),
            Err(Unavailable::NotReady("default/cp".into()))
        );
        let garbled = content("node1", Some("localhost:5050/default/cp:latest".into()));
        assert!(matches!(
            ready_image(&garbled),
            Err(Unavailable::NotReady(_))
        ));
    }

    #[test]
    fn the_image_comes_from_here_or_from_its_node() {
        let c = content("node1", None);
        assert_eq!(source(&c, "node1", true), Ok(Source::Local));
        assert_eq!(source(&c, "node2", true), Ok(Source::Local), "cached");
        assert_eq!(source(&c, "node2", false), Ok(Source::Peer("node1".into())));
        assert!(matches!(
            source(&c, "node1", false),
            Err(Unavailable::Lost { .. })
        ));
        assert!(matches!(
            source(&content("", None), "node1", false),
            Err(Unavailable::NoNode(_))
        ));
    }
}
