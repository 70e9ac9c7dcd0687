//! Garbage collection of the image layout: cached copies of checkpoints whose Content is gone,
//! and what interrupted downloads left behind. This node's own images go with their Content's
//! finalizer; copies fetched from peers only here.

use std::collections::HashSet;

use checkpointing::oci::{ImageLayout, OciError};

use crate::cluster::Cluster;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("listing the checkpoints of the cluster")]
    Cluster(#[source] kube::Error),
    #[error("removing a cached image")]
    Layout(#[from] OciError),
}

/// Tags of the layout no Content has any more: cached copies of deleted checkpoints.
pub fn stale_tags(tags: &[String], live: &HashSet<String>) -> Vec<String> {
    tags.iter()
        .filter(|t| !live.contains(*t))
        .cloned()
        .collect()
}

/// Removes the layout's images whose Content is gone; returns their tags.
pub async fn prune<C: Cluster>(cluster: &C, layout: &ImageLayout) -> Result<Vec<String>, GcError> {
    let live = cluster.content_uids().await.map_err(GcError::Cluster)?;
    let stale = stale_tags(&layout.tags()?, &live);
    for tag in &stale {
        tokio::task::block_in_place(|| layout.remove(tag))?;
        tracing::info!(%tag, "removed the cached image of a deleted checkpoint");
    }
    Ok(stale)
}

/// Removes what interrupted downloads left in the layout's ingest directory.
pub fn clear_ingest(layout: &ImageLayout) -> std::io::Result<()> {
    let dir = layout.ingest_dir();
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tags_without_a_content_are_stale() {
        let tags = vec!["a".to_owned(), "b".to_owned()];
        let live = HashSet::from(["b".to_owned(), "c".to_owned()]);
        assert_eq!(stale_tags(&tags, &live), ["a"]);
    }
}
