//! Archives whose Content is gone. A Content's finalizer lets this node's noded remove its
//! files; when the finalizer is released without it (the node's noded was down, or someone
//! removed it by hand), the archive, its volumes and any temporary file stay behind. They are
//! swept here: files named for a Content UID that no Content has, and old enough that no
//! checkpoint can still be making them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::Live;
use crate::store::uid_of;

/// How old a file must be before it is swept. Its Content is already gone: this only keeps a
/// file whose Content was just created, and is not yet in a list, from ever being taken for an
/// orphan.
pub const GRACE: Duration = Duration::from_secs(600);

/// A regular file of the checkpoint directory, and how long ago it was last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    pub age: Duration,
}

/// The regular files directly in `dir` (the layout's directory and anything not UTF-8 named
/// is left out).
pub fn list(dir: &Path) -> std::io::Result<Vec<Held>> {
    let now = SystemTime::now();
    let mut held = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // The entry itself, never what a link names; one gone meanwhile is not held.
        let (Ok(meta), Ok(name)) = (entry.metadata(), entry.file_name().into_string()) else {
            continue;
        };
        if meta.is_file() {
            let written = meta.modified()?;
            let age = now.duration_since(written).unwrap_or_default();
            held.push(Held { name, age });
        }
    }
    Ok(held)
}

/// Which of `held` to remove: the files of a checkpoint whose Content UID is not `live`,
/// written more than `grace` ago. Files named for no checkpoint are never touched.
pub fn orphans<'a>(held: &'a [Held], live: &Live, grace: Duration) -> Vec<&'a str> {
    held.iter()
        .filter(|f| f.age > grace)
        .filter(|f| uid_of(&f.name).is_some_and(|uid| !live.uids.contains(uid)))
        .map(|f| f.name.as_str())
        .collect()
}

/// Removes the orphans (see [`orphans`]) of `held`, the files listed in `dir` before `live`
/// was: a file made after that list had its Content made before it. Returns those removed;
/// one that cannot be is logged and left for the next round.
pub fn sweep(dir: &Path, held: &[Held], live: &Live) -> Vec<String> {
    let mut removed = Vec::new();
    for name in orphans(held, live, GRACE) {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed the file of a deleted checkpoint");
                removed.push(name.to_owned());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "removing the file of a deleted checkpoint failed; retrying next round");
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "11111111-2222-3333-4444-555555555555";
    const GONE: &str = "66666666-7777-8888-9999-aaaaaaaaaaaa";

    fn held(name: &str, minutes: u64) -> Held {
        Held {
            name: name.to_owned(),
            age: Duration::from_secs(minutes * 60),
        }
    }

    #[test]
    fn only_old_files_of_checkpoints_without_a_content_are_orphans() {
        let mut live = Live::default();
        live.uids.insert(LIVE.to_owned());
        let files = [
            held(&format!("checkpoint-ns_p-c-{LIVE}.tar"), 600),
            held(&format!(".checkpoint-ns_p-c-{LIVE}.tar.partial"), 600),
            held(&format!("checkpoint-ns_p-c-{GONE}.tar"), 11),
            held(&format!("checkpoint-ns_p-c-{GONE}.volumes.tar"), 11),
            held(&format!(".checkpoint-ns_p-c-{GONE}.tar.partial"), 11),
            held(&format!("checkpoint-ns_p-c-{GONE}.volumes.partial"), 9),
            held("notes.txt", 6000),
        ];
        assert_eq!(
            orphans(&files, &live, GRACE),
            [
                format!("checkpoint-ns_p-c-{GONE}.tar"),
                format!("checkpoint-ns_p-c-{GONE}.volumes.tar"),
                format!(".checkpoint-ns_p-c-{GONE}.tar.partial"),
            ]
        );
    }
}
