//! Which manifest a request may be answered with: the one its reference resolves to in the
//! ContainerCheckpointContent of its repository. Pure.

use checkpointing::crd::ContainerCheckpointContent;

use super::route::Reference;
use crate::images::{Unavailable, ready_image, repo_of};

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
}
