//! What the setup leaves to a person, decided from what it found: restarts (a file read only at
//! start changed after the process started) and kubelet flags. Pure: the host facts come in.

use std::path::Path;
use std::time::SystemTime;

const CONFIG_FLAG: &str = "--image-credential-provider-config";
const BIN_DIR_FLAG: &str = "--image-credential-provider-bin-dir";

/// Whether `process` must restart to read `file`: it was changed (`changed`) after the process
/// started (`started`). Unknown start: a change now needs a restart to be sure.
pub fn restart(
    process: &str,
    file: &Path,
    changed: SystemTime,
    started: Option<SystemTime>,
    changed_now: bool,
) -> Option<String> {
    let stale = match started {
        Some(started) => changed > started,
        None => changed_now,
    };
    stale.then(|| {
        format!(
            "restart {process}: {} changed after it started (the setup never restarts it)",
            file.display()
        )
    })
}

/// The value of `flag` on a command line, as `--flag=value` or `--flag value`.
fn flag_value<'a>(cmdline: &'a [String], flag: &str) -> Option<&'a str> {
    cmdline.iter().enumerate().find_map(|(i, arg)| {
        let rest = arg.strip_prefix(flag)?;
        match rest.strip_prefix('=') {
            Some(value) => Some(value),
            None if rest.is_empty() => cmdline.get(i + 1).map(String::as_str),
            None => None,
        }
    })
}

/// The kubelet flags its command line (`None`: no kubelet process found) lacks for the
/// provider configuration at `config` and its binary in `bin_dir`.
pub fn kubelet_flags(cmdline: Option<&[String]>, config: &Path, bin_dir: &Path) -> Vec<String> {
    let Some(cmdline) = cmdline else {
        return vec![format!(
            "no kubelet process on this node's command lines (k3s/RKE2 run it inside their own: \
             pass {CONFIG_FLAG}={} and {BIN_DIR_FLAG}={} as --kubelet-arg; managed clusters \
             may not allow them)",
            config.display(),
            bin_dir.display()
        )];
    };
    [(CONFIG_FLAG, config), (BIN_DIR_FLAG, bin_dir)]
        .into_iter()
        .filter_map(|(flag, wanted)| match flag_value(cmdline, flag) {
            Some(v) if Path::new(v) == wanted => None,
            Some(v) => Some(format!(
                "the kubelet's {flag} is {v}, not {}: merge the checkpointing provider into \
                 it (or point nodeSetup at it)",
                wanted.display()
            )),
            None => Some(format!(
                "start the kubelet with {flag}={} (then restart it)",
                wanted.display()
            )),
        })
        .collect()
}

/// containerd's config.toml (its text, `None`: not found) read for what the setup cannot
/// write: `config_path` (hosts.toml is read only with it) and the restore switch.
pub fn containerd_config(text: Option<&str>, path: &Path, certs_dir: &Path) -> Vec<String> {
    let Some(text) = text else {
        return vec![format!(
            "no {}: set config_path = \"{}\" under the CRI registry plugin in containerd's \
             configuration, then restart containerd",
            path.display(),
            certs_dir.display()
        )];
    };
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_owned())
        })
    };
    let mut manual = Vec::new();
    match value("config_path") {
        Some(v) if Path::new(&v) == certs_dir => {}
        Some(v) => manual.push(format!(
            "{} sets config_path = \"{v}\", not {}: point nodeSetup's certs directory there",
            path.display(),
            certs_dir.display()
        )),
        None => manual.push(format!(
            "{} sets no config_path: add config_path = \"{}\" under the CRI registry plugin \
             (k3s/RKE2: in config.toml.tmpl), then restart containerd; localhost pulls work \
             over plain HTTP without it",
            path.display(),
            certs_dir.display()
        )),
    }
    if value("enable_experimental_restore_via_create").as_deref() != Some("true") {
        manual.push(format!(
            "{} lacks enable_experimental_restore_via_create = true (containerd 2.2.7+/2.3.4+ \
             restore only with it; deploy/containerd/config.toml)",
            path.display()
        ));
    }
    manual
}
