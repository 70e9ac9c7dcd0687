//! The kubectl plugin, the real binary (built beside the tests by `cargo build --workspace
//! --all-targets`), run against the testbed.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::Testbed;

/// `target/<profile>/kubectl-checkpoint`: the tests run from `target/<profile>/deps/`.
fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("kubectl-checkpoint");
    assert!(
        path.exists(),
        "no {}: run `cargo build -p kubectl-checkpoint` first",
        path.display()
    );
    path
}

/// Runs the plugin with the testbed's kubeconfig; returns its output and prints it (so a failing
/// test shows what the plugin said).
pub fn plugin(tb: &Testbed, args: &[&str]) -> Output {
    let kubeconfig = tb.state.join("kubeconfig");
    let out = Command::new(plugin_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl-checkpoint");
    println!(
        "kubectl-checkpoint {args:?} → {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
