//! CRI-O: it tells its settings over its socket as plain HTTP (`GET /config` in TOML,
//! `GET /info`); checkpoint needs CRIU support on, restore needs the container-level switch.

use std::time::Duration;

use super::{Finding, Settings, Verdict};
use crate::cri::Runtime;

/// CRI-O's default socket.
pub const ENDPOINT: &str = "unix:///var/run/crio/crio.sock";

/// The two settings of CRI-O's `/config` (TOML) that checkpoint and restore depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `[crio.runtime] enable_criu_support`.
    pub enable_criu_support: Option<bool>,
    /// `[crio.checkpoint_restore] container_level_enabled`; restore needs
    /// `checkpoint_restore`.
    pub container_level_enabled: Option<String>,
}

/// Reads the two keys from CRI-O's configuration: a line reader of sections and `key = value`
/// lines is enough for them (no arrays or multi-line strings among them).
pub fn parse_config(toml: &str) -> Config {
    let mut config = Config::default();
    let mut section = String::new();
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            if !name.starts_with('[') {
                section = name.split(']').next().unwrap_or("").trim().to_owned();
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let value = toml_value(value);
        match (section.as_str(), key) {
            ("crio.runtime", "enable_criu_support") => {
                config.enable_criu_support = value.parse().ok();
            }
            ("crio.checkpoint_restore", "container_level_enabled") => {
                config.container_level_enabled = Some(value);
            }
            _ => {}
        }
    }
    config
}

/// A scalar TOML value without its quotes or trailing comment.
fn toml_value(raw: &str) -> String {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = raw.strip_prefix(quote) {
            return rest.split(quote).next().unwrap_or("").to_owned();
        }
    }
    raw.split('#').next().unwrap_or("").trim().to_owned()
}

/// The CRIU check from CRI-O's configuration.
pub fn criu(config: &Config) -> Finding {
    match config.enable_criu_support {
        Some(true) => Finding::new(Verdict::Ok, "[crio.runtime] enable_criu_support = true"),
        Some(false) => Finding::new(
            Verdict::Failed,
            "[crio.runtime] enable_criu_support = false",
        ),
        None => Finding::new(
            Verdict::Failed,
            "CRI-O's /config has no [crio.runtime] enable_criu_support",
        ),
    }
}

/// The restore check from CRI-O's configuration.
pub fn restore(config: &Config) -> Finding {
    match config.container_level_enabled.as_deref() {
        Some("checkpoint_restore") => Finding::new(
            Verdict::Ok,
            "[crio.checkpoint_restore] container_level_enabled = \"checkpoint_restore\"",
        ),
        Some(other) => Finding::new(
            Verdict::Failed,
            format!(
                "[crio.checkpoint_restore] container_level_enabled = {other:?}; restoring needs \
                 \"checkpoint_restore\""
            ),
        ),
        None => Finding::new(
            Verdict::Assumed,
            "CRI-O's /config has no [crio.checkpoint_restore] container_level_enabled; older \
             releases restore when CRIU support is on",
        ),
    }
}

/// CRI-O's settings from its `/config`, with the storage and cgroup drivers of its `/info`.
pub async fn settings<R: Runtime>(runtime: &R, timeout: Duration) -> Settings {
    let mut about = String::new();
    match runtime.http_get("/info", timeout).await {
        Ok(info) => {
            let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
            for key in ["storage_driver", "cgroup_driver"] {
                if let Some(value) = info.get(key).and_then(|v| v.as_str()) {
                    about.push_str(&format!(", {key} {value}"));
                }
            }
        }
        Err(e) => about.push_str(&format!(" ({e})")),
    }
    match runtime.http_get("/config", timeout).await {
        Ok(toml) => {
            let config = parse_config(&toml);
            Settings {
                about,
                criu: criu(&config),
                restore: restore(&config),
            }
        }
        Err(e) => Settings {
            about,
            criu: Finding::new(Verdict::Failed, e.clone()),
            restore: Finding::new(Verdict::Failed, e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRIO_CONFIG: &str = r#"
[crio]
  root = "/var/lib/containers/storage"
  [crio.api]
    listen = "/var/run/crio/crio.sock"
  [crio.runtime]
    default_runtime = "crun"
    # enable_criu_support = false
    enable_criu_support = true
    default_capabilities = [
      "CHOWN",
    ]
  [crio.image]
    pause_image = "registry.k8s.io/pause:3.10"
  [crio.checkpoint_restore]
    container_level_enabled = "checkpoint_restore" # both
  [[crio.runtime.runtimes]]
    enable_criu_support = false
"#;

    #[test]
    fn crio_config_yields_the_two_keys_of_their_sections() {
        let config = parse_config(CRIO_CONFIG);
        assert_eq!(
            config,
            Config {
                enable_criu_support: Some(true),
                container_level_enabled: Some("checkpoint_restore".into()),
            }
        );
        assert_eq!(restore(&config).verdict, Verdict::Ok);

        let checkpoint_only = parse_config(
            "[crio.runtime]\nenable_criu_support = false\n[crio.checkpoint_restore]\n\
             container_level_enabled = 'checkpoint'\n",
        );
        assert_eq!(checkpoint_only.enable_criu_support, Some(false));
        assert_eq!(restore(&checkpoint_only).verdict, Verdict::Failed);

        // Same keys in other sections do not count.
        let elsewhere = parse_config("[crio]\nenable_criu_support = true\n");
        assert_eq!(elsewhere, Config::default());
        assert_eq!(restore(&elsewhere).verdict, Verdict::Assumed);
    }
}
