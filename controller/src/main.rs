//! The controller binary. `controller crd` prints both CRDs as YAML.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write one file each into --dir
    /// (how deploy/crds/ is regenerated).
    Crd {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { dir } => {
            let files = checkpointing::crd::crd_files().context("rendering the CRDs")?;
            for (name, yaml) in files {
                match &dir {
                    Some(dir) => {
                        let path = dir.join(&name);
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    None => print!("---\n{yaml}"),
                }
            }
            Ok(())
        }
    }
}
