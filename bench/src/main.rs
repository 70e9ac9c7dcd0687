//! `bench`: speed and footprint of the checkpoint system on the testbed, each figure measured
//! side by side with the alternative doing the same job (the raw CRI call, buildah, skopeo).
//! Prints a table and JSON, each figure the issue sets a target for marked met or missed (a
//! miss does not fail the run). Run it through `bench/run`, which builds, brings up a fresh
//! testbed (real kubelets on CRI-O or containerd nodes) and installs the product on it first.

mod api_load;
mod checkpoint;
mod cluster;
mod drain;
mod footprint;
mod migration;
mod packaging;
mod raw;
mod registry;
mod report;
mod restore;
mod scale;
mod stats;
mod transfer;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use checkpointing::cri::Runtime as _;
use clap::{Parser, ValueEnum};

use crate::cluster::{Cluster, Plan};
use crate::report::Row;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Size {
    /// A few repetitions of everything at small sizes: keeps the bench from rotting (CI).
    Small,
    /// The figures worth quoting: 16 MiB to 1 GiB, 50 concurrent, 1,000 requests on 4 nodes.
    Full,
}

/// Benchmarks the checkpoint system on the testbed against the raw CRI, buildah and skopeo.
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Cli {
    #[arg(long, value_enum, default_value_t = Size::Full)]
    size: Size,
    /// Build profile of the binaries under test, for the record.
    #[arg(long, default_value = "release")]
    profile: String,
    /// Also write the JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let plan = match cli.size {
        Size::Small => Plan::small(),
        Size::Full => Plan::full(),
    };
    let tb = e2e::Testbed::get();
    let client = tb.client().await;
    let namespace = e2e::TestNamespace::create(&tb, "bench").await;
    let c = Cluster {
        tb: tb.clone(),
        client,
        ns: namespace.name.clone(),
    };
    let version = tb.cri("node1").await.version().await?;
    let started = Instant::now();

    let mut rows: Vec<Row> = Vec::new();
    section("1 checkpoint overhead");
    let checkpoints = checkpoint::run(&c, &plan).await?;
    rows.extend(checkpoints.rows);
    section("2 packaging");
    let packaging = packaging::run(&checkpoints.archive, &plan, &version.runtime_name);
    std::fs::remove_file(&checkpoints.archive)?;
    rows.extend(packaging?);
    section("3 transfer");
    rows.extend(transfer::run(&c, &plan).await?);
    section("4 restore");
    rows.extend(restore::run(&c, &plan).await?);
    section("5 migration");
    rows.extend(migration::run(&c, &plan).await?);
    section("6 footprint");
    rows.extend(footprint::run(&c, &plan).await?);
    section("7 scale");
    let calls_before = e2e::audit::settled_calls(&tb, &c.ns).await;
    rows.extend(scale::run(&c, &plan).await?);
    let calls_after = e2e::audit::settled_calls(&tb, &c.ns).await;
    rows.extend(api_load::rows(&calls_before, &calls_after, plan.scale)?);
    section("8 registry");
    rows.extend(registry::run(&c, &plan).await?);
    section("9 drain");
    rows.extend(drain::run(&c, &plan).await?);

    let slowest = report::slowest(&rows).context("no comparison was measured")?;
    let targets = rows.iter().filter(|r| r.target.is_some()).count();
    let missed: Vec<String> = report::missed(&rows)
        .map(|r| format!("{} — {}", r.section, r.figure))
        .collect();
    let json = serde_json::json!({
        "plan": plan,
        "profile": cli.profile,
        "runtime": format!("{} {}", version.runtime_name, version.runtime_version),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "wall_seconds": started.elapsed().as_secs(),
        "rows": rows,
        "slowest": slowest,
        "targets": {"count": targets, "missed": missed},
    });
    println!(
        "\nbench ({} size, {} binaries, {}, {} CPUs; {} repetitions; ratio = our cost / theirs)\n",
        plan.size,
        cli.profile,
        json["runtime"].as_str().unwrap_or_default(),
        json["cpus"],
        plan.repetitions
    );
    print!("{}", report::table(&rows));
    if let Some(alt) = &slowest.alternative {
        println!(
            "\nslowest ratio: {} — {} vs {}: {:.2}×",
            slowest.section, slowest.figure, alt.name, alt.ratio
        );
    }
    println!(
        "\ntargets: {} of {targets} met{}",
        targets - missed.len(),
        missed
            .iter()
            .map(|m| format!("\n  MISSED {m}"))
            .collect::<String>()
    );
    // One line on stdout (for logs and pipes), indented in the file.
    println!("\n{json}");
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn section(name: &str) {
    eprintln!("== {name}");
}
