//! runc's CRIU configuration file. runc names `/etc/criu/runc.conf` to CRIU for every checkpoint
//! and restore (unless the container's `org.criu.config` annotation names another); crun reads
//! `/etc/criu/crun.conf` first and this one otherwise. CRI-O and containerd both run containers
//! through them, so this one file is the node's TCP setting for either runtime.
//!
//! Without a TCP option CRIU refuses to dump a process with an established connection. Only
//! `tcp-close` makes a migration work: the connection is dumped closed, and the restored
//! process sees it closed. `tcp-established` dumps the connection whole, which restores only
//! at the same IP address, never at a new pod's.

use crate::runtime::{Finding, Verdict};

/// The file on the node.
pub const RUNC_CONF: &str = "/etc/criu/runc.conf";

/// Whether `text` sets the boolean option `flag` as CRIU reads its configuration: an option a
/// line without its leading `--`, a `#` starting a comment (a word glued to one, or a value
/// after a boolean option, is CRIU's error).
pub fn sets(text: &str, flag: &str) -> bool {
    text.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(flag) && words.next().is_none_or(|w| w.starts_with('#'))
    })
}

/// The `tcp_close` prerequisite from the file's text (`None`: there is no such file).
pub fn tcp(text: Option<&str>) -> Finding {
    let Some(text) = text else {
        return Finding::new(
            Verdict::Failed,
            format!(
                "no {RUNC_CONF} on the node: CRIU refuses to checkpoint a container with an \
                 established TCP connection (install deploy/node/criu-runc.conf there)"
            ),
        );
    };
    if sets(text, "tcp-close") {
        return Finding::new(
            Verdict::Ok,
            format!("{RUNC_CONF} sets tcp-close: established TCP connections restore closed"),
        );
    }
    let why = if sets(text, "tcp-established") {
        "sets tcp-established, not tcp-close: connections are dumped whole and cannot be \
         restored at another pod's IP"
    } else {
        "lacks tcp-close: CRIU refuses to checkpoint a container with an established TCP \
         connection"
    };
    Finding::new(
        Verdict::Failed,
        format!("{RUNC_CONF} {why} (install deploy/node/criu-runc.conf there)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_close_counts() {
        let ok = |text: &str| tcp(Some(text)).verdict == Verdict::Ok;
        assert!(ok("tcp-close\n"));
        assert!(ok(
            "# shipped by deploy/node\n  tcp-close   # restored closed\n"
        ));
        assert!(ok("tcp-established\ntcp-close\n"), "tcp-close wins in CRIU");
        assert!(!ok(""));
        assert!(!ok("# tcp-close\n"), "commented out");
        assert!(!ok("tcp-close#x\n"), "CRIU refuses the line");
        assert!(!ok("tcp-close yes\n"), "a value CRIU would not take");
        assert!(
            !ok("--tcp-close\n"),
            "written with dashes CRIU does not expect"
        );
        assert!(!ok("tcp-closed\n"));
        let established = tcp(Some("tcp-established\n"));
        assert_eq!(established.verdict, Verdict::Failed);
        assert!(
            established.detail.contains("another pod's IP"),
            "{established:?}"
        );
    }

    #[test]
    fn a_missing_file_names_the_file_to_install() {
        let missing = tcp(None);
        assert_eq!(missing.verdict, Verdict::Failed);
        assert!(missing.detail.contains(RUNC_CONF));
        assert!(missing.detail.contains("deploy/node/criu-runc.conf"));
    }
}
