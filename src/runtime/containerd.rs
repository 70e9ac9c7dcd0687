//! containerd: it tells nothing of its settings over CRI, so CRIU is the `criu` binary on the
//! node and the restore switch is judged from the version.

use super::{Finding, Verdict};

/// containerd's default socket.
pub const ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// Whether containerd `version` restores: through CreateContainer in 2.1–2.3 (from 2.2.7/2.3.4
/// behind `enable_experimental_restore_via_create`, which CRI does not show).
pub fn restore(version: &str) -> Finding {
    let mut numbers = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= (2, 4) => Finding::new(
            Verdict::Failed,
            format!("containerd {version} does not restore through CreateContainer (2.1–2.3 do)"),
        ),
        _ => Finding::new(
            Verdict::Assumed,
            format!(
                "containerd {version}: restore through CreateContainer assumed (the setting is \
                 not visible over CRI)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_restore_is_assumed_before_2_4() {
        assert_eq!(restore("v2.1.4").verdict, Verdict::Assumed);
        assert_eq!(restore("2.3.4").verdict, Verdict::Assumed);
        assert_eq!(restore("v2.4.0").verdict, Verdict::Failed);
        assert_eq!(restore("devel").verdict, Verdict::Assumed);
    }
}
