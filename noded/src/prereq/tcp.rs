//! The `tcp_close` check: whether the node's CRIU configuration for runc lets CRIU dump a
//! process with established TCP connections (closed on restore). Reported, not required: only
//! containers with such connections fail without it, each with a message naming the setting.

use std::path::Path;

use checkpointing::criu::conf::{self, RUNC_CONF};
use checkpointing::runtime::Verdict;
use tokio::io::AsyncReadExt;

use super::{Check, TCP_CLOSE};

/// More than any CRIU configuration holds: a larger file is read this far.
const READ_MAX: u64 = 64 * 1024;

/// Reads the node's `/etc/criu/runc.conf`, which noded sees at `path`.
pub async fn tcp_close(path: &Path) -> Check {
    let mut text = String::new();
    let read = match tokio::fs::File::open(path).await {
        Ok(file) => file
            .take(READ_MAX)
            .read_to_string(&mut text)
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    let mut check = match read {
        Ok(()) => Check::found(TCP_CLOSE, conf::tcp(Some(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Check::found(TCP_CLOSE, conf::tcp(None))
        }
        Err(e) => Check::new(
            TCP_CLOSE,
            Verdict::Failed,
            format!("reading {RUNC_CONF}: {e}"),
        ),
    };
    if path != Path::new(RUNC_CONF) {
        check
            .detail
            .push_str(&format!(" (noded reads it at {})", path.display()));
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_nodes_file_is_read_where_noded_sees_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("runc.conf");
        let missing = tcp_close(&path).await;
        assert_eq!(missing.state, Verdict::Failed);
        assert!(
            missing.detail.contains(&path.display().to_string()),
            "{missing:?}"
        );

        std::fs::write(&path, "# shipped by deploy/node\ntcp-close\n").unwrap();
        let ok = tcp_close(&path).await;
        assert_eq!((ok.name, ok.state), (TCP_CLOSE, Verdict::Ok), "{ok:?}");

        std::fs::write(&path, "tcp-established\n").unwrap();
        assert_eq!(tcp_close(&path).await.state, Verdict::Failed);

        let unreadable = tcp_close(tmp.path()).await;
        assert_eq!(
            unreadable.state,
            Verdict::Failed,
            "a directory: {unreadable:?}"
        );
    }
}
