//! Which CRIU the node has: `criu --version` of the binary on PATH, the one containerd's runc
//! runs (noded runs on the node, with its PATH).

use std::time::Duration;

/// The version in `criu --version` output (`Version: 4.1`, maybe followed by `GitID: …`).
pub fn parse(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let version = line.trim().strip_prefix("Version:")?.trim();
        (!version.is_empty()).then(|| version.to_owned())
    })
}

/// The version of the `criu` binary on PATH, or why there is none, within `timeout`.
pub async fn on_path(timeout: Duration) -> Result<String, String> {
    let run = tokio::task::spawn_blocking(|| {
        std::process::Command::new("criu").arg("--version").output()
    });
    let output = match tokio::time::timeout(timeout, run).await {
        Err(_) => return Err("criu --version did not answer".into()),
        Ok(Err(e)) => return Err(format!("running criu --version: {e}")),
        Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no criu binary on PATH".into());
        }
        Ok(Ok(Err(e))) => return Err(format!("running criu --version: {e}")),
        Ok(Ok(Ok(output))) => output,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    match parse(&text) {
        Some(v) if output.status.success() => Ok(v),
        _ => Err(format!(
            "criu --version answered {}: {}",
            output.status,
            text.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_version_is_read_from_its_output() {
        assert_eq!(parse("Version: 4.1\n").as_deref(), Some("4.1"));
        assert_eq!(
            parse("Version: 3.19\nGitID: v3.19-8-g1d2e3f\n").as_deref(),
            Some("3.19")
        );
        assert_eq!(parse("criu: command not found\n"), None);
        assert_eq!(parse("Version:\n"), None);
    }
}
