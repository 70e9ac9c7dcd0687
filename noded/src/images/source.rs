//! Which image a ContainerCheckpointContent has and where it comes from, decided from the
//! Content alone. Pure.

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::reference::Spelling;

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

pub fn repo_of(content: &ContainerCheckpointContent) -> String {
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
    let digest = Spelling::of(image).sha256().ok_or_else(not_ready)?;
    Ok((image, digest))
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
    use crate::testing::content;

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
