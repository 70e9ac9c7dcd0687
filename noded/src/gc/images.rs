//! Which of the runtime's images are copies of deleted checkpoints. Pure.

use checkpointing::cri::api;
use checkpointing::reference::{ImageRef, normalise_host};

use super::Live;
use crate::images::Repo;

/// A runtime image reference under the registry host: `<host>/<repo>@<digest>`, or
/// `<host>/<repo>:<tag>` where the tag (`latest`, a Content UID) names whichever image the
/// registry answers for it now.
struct Checkpoint {
    /// `<namespace>/<name>` of the Content.
    repo: String,
    /// `None` for a tag.
    digest: Option<String>,
}

/// The checkpoint `reference` names, `None` when it is not one under `registry` (normalised).
fn checkpoint(reference: &str, registry: &str) -> Option<Checkpoint> {
    let image = ImageRef::parse(reference)
        .ok()
        .filter(|i| i.host == registry)?;
    let digest = match (&image.digest, &image.tag) {
        (Some(_), _) => Some(image.sha256()?.to_owned()),
        (None, Some(_)) => None,
        (None, None) => return None,
    };
    // The registry serves `<namespace>/<name>` only: another path is not one of ours.
    let repo = Repo::of_path(&image.repository)?.to_string();
    Some(Checkpoint { repo, digest })
}

/// The runtime's images to remove: those all of whose references (repo digests and tags) name
/// checkpoints under `registry` and none a live one. An image with no reference, or with any
/// reference elsewhere, is never ours to remove.
pub fn stale<'a>(images: &'a [api::Image], registry: &str, live: &Live) -> Vec<&'a api::Image> {
    let registry = normalise_host(registry).unwrap_or_else(|_| registry.to_owned());
    images
        .iter()
        .filter(|image| {
            let mut references = image.repo_digests.iter().chain(&image.repo_tags).peekable();
            references.peek().is_some()
                && references.all(|r| match checkpoint(r, &registry) {
                    Some(Checkpoint {
                        repo,
                        digest: Some(digest),
                    }) => !live.has_image(&repo, &digest),
                    Some(Checkpoint { repo, digest: None }) => !live.has_repo(&repo),
                    None => false,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{content, digest};

    const HOST: &str = "localhost:5050";

    fn image(id: &str, digests: &[&str], tags: &[&str]) -> api::Image {
        let owned = |refs: &[&str]| refs.iter().map(|r| (*r).to_owned()).collect();
        api::Image {
            id: id.into(),
            repo_digests: owned(digests),
            repo_tags: owned(tags),
            ..Default::default()
        }
    }

    /// Content `default/cp` with the image `digest('a')`.
    fn live() -> Live {
        Live::of(&[content(
            "node1",
            Some(format!("{HOST}/default/cp@{}", digest('a'))),
        )])
    }

    fn stale_ids(images: &[api::Image]) -> Vec<&str> {
        stale(images, HOST, &live())
            .into_iter()
            .map(|i| i.id.as_str())
            .collect()
    }

    #[test]
    fn the_image_of_a_live_content_is_kept_and_of_a_deleted_one_removed() {
        let kept = format!("{HOST}/default/cp@{}", digest('a'));
        let same_name_older = format!("{HOST}/default/cp@{}", digest('b'));
        let deleted = format!("{HOST}/default/gone@{}", digest('c'));
        let images = [
            image("kept", &[&kept], &[]),
            image("older", &[&same_name_older], &[]),
            image("deleted", &[&deleted], &[]),
        ];
        assert_eq!(stale_ids(&images), ["older", "deleted"]);
    }

    #[test]
    fn tags_count_by_repository() {
        let images = [
            image("tagged-live", &[], &[&format!("{HOST}/default/cp:latest")]),
            image("tagged-gone", &[], &[&format!("{HOST}/default/gone:uid-2")]),
        ];
        assert_eq!(stale_ids(&images), ["tagged-gone"]);
    }

    #[test]
    fn one_live_reference_keeps_the_image() {
        let dead = format!("{HOST}/default/gone@{}", digest('c'));
        let images = [
            image(
                "both",
                &[&dead, &format!("{HOST}/default/cp@{}", digest('a'))],
                &[],
            ),
            image("tag", &[&dead], &[&format!("{HOST}/default/cp:latest")]),
        ];
        assert!(stale_ids(&images).is_empty());
    }

    #[test]
    fn images_not_under_the_registry_are_never_touched() {
        let dead = format!("{HOST}/default/gone@{}", digest('c'));
        let foreign = [
            "docker.io/library/busybox@sha256:00".to_owned(),
            format!("docker.io/library/busybox@{}", digest('d')),
            format!("{HOST}0/default/gone@{}", digest('c')),
            format!("127.0.0.1:5050/default/gone@{}", digest('c')),
            format!("registry.example/{HOST}/default/gone@{}", digest('c')),
            format!("{HOST}/gone@{}", digest('c')),
            format!("{HOST}/a/b/gone@{}", digest('c')),
            format!("{HOST}/default/gone@sha256:00"),
            format!("{HOST}/default/gone"),
        ];
        let mut images: Vec<api::Image> = foreign.iter().map(|r| image(r, &[r], &[])).collect();
        images.push(image("shared", &[&dead, &foreign[0]], &[]));
        images.push(image("untagged", &[], &[]));
        assert!(stale_ids(&images).is_empty());
    }
}
