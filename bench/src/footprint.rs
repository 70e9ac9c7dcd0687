//! Bench section 6 — Footprint: resident memory and CPU time of noded (node1's DaemonSet pod)
//! and of the controller (the leader's pod), idle and while `concurrent` checkpoints run at
//! once. Read from the host's /proc, sampled every 100 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::try_join_all;

use crate::cluster::{Cluster, Plan};
use crate::report::{Better, Row, Target};
use crate::stats::Summary;

const NODE: &str = "node1";
const TICK: Duration = Duration::from_millis(100);
/// The targets: each daemon idles in at most 15 MiB and grows by at most 30 % under a
/// burst.
const IDLE_RSS_MIB: f64 = 15.0;
const BUSY_RSS_FACTOR: f64 = 1.3;

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let daemons = [
        ("noded", c.noded_pid(NODE)?),
        ("controller", c.controller_pid().await?),
    ];
    let hz = clock_ticks_per_second()?;
    let idle = sample(
        &daemons,
        hz,
        tokio::time::sleep(Duration::from_secs(plan.idle_seconds)),
    )
    .await?;

    let pods: Vec<String> = (0..plan.concurrent.min(10))
        .map(|i| format!("busy-{i}"))
        .collect();
    for pod in &pods {
        e2e::run_pod(&c.client, &c.ns, e2e::counter_pod(pod, NODE, 1)).await;
    }
    let names: Vec<String> = (0..plan.concurrent).map(|i| format!("burst-{i}")).collect();
    let burst = async {
        try_join_all(
            names
                .iter()
                .zip(pods.iter().cycle())
                .map(|(name, pod)| c.checkpoint(name, pod, "counter")),
        )
        .await
    };
    let busy = sample(&daemons, hz, burst).await?;
    try_join_all(names.iter().map(|n| c.remove_checkpoint(n))).await?;
    try_join_all(pods.iter().map(|p| c.remove_pod(p))).await?;

    let mut rows = Vec::new();
    for (i, (daemon, _)) in daemons.iter().enumerate() {
        let (idle, busy) = (&idle.0[i], &busy.0[i]);
        let during = format!("during {} concurrent checkpoints", plan.concurrent);
        rows.push(
            Row::alone(
                "6 footprint",
                format!("{daemon} RSS, idle"),
                "MiB",
                idle.rss_mib.clone(),
            )
            .with_target(Target::AtMost(IDLE_RSS_MIB)),
        );
        // Memory under load, as a multiple of the same daemon's idle memory.
        rows.push(
            Row::versus(
                "6 footprint",
                format!("{daemon} RSS, {during}"),
                "MiB",
                Better::Lower,
                busy.rss_mib.clone(),
                "idle RSS",
                idle.rss_mib.clone(),
            )
            .with_target(Target::factor(BUSY_RSS_FACTOR)),
        );
        for (when, usage) in [("idle", idle), (during.as_str(), busy)] {
            rows.push(Row::alone(
                "6 footprint",
                format!("{daemon} CPU, {when}"),
                "% of a core",
                usage.cpu_percent.clone(),
            ));
        }
        rows.push(Row::alone(
            "6 footprint",
            format!(
                "{daemon} CPU time per checkpoint (burst of {})",
                plan.concurrent
            ),
            "ms",
            Summary::of(&[busy.cpu_seconds * 1e3 / plan.concurrent as f64]).context("no figure")?,
        ));
    }
    Ok(rows)
}

/// One daemon's usage over a sampled stretch.
struct Usage {
    rss_mib: Summary,
    /// Per-second samples.
    cpu_percent: Summary,
    cpu_seconds: f64,
}

/// Samples every daemon until `work` ends; returns each one's usage and `work`'s output.
async fn sample<T>(
    daemons: &[(&str, u32)],
    hz: f64,
    work: impl Future<Output = T>,
) -> anyhow::Result<(Vec<Usage>, T)> {
    let stop = Arc::new(AtomicBool::new(false));
    let pids: Vec<u32> = daemons.iter().map(|d| d.1).collect();
    let sampler = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut rss: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
            let mut ticks: Vec<Vec<(Instant, u64)>> = vec![Vec::new(); pids.len()];
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                let done = stop.load(Ordering::Relaxed);
                let now = Instant::now();
                for (i, pid) in pids.iter().enumerate() {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .with_context(|| format!("pid {pid} is gone"))?;
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
                    rss[i].push(rss_kib(&status).context("no VmRSS")? as f64 / 1024.0);
                    ticks[i].push((now, cpu_ticks(&stat).context("no CPU times")?));
                }
                if done {
                    return anyhow::Ok((rss, ticks));
                }
            }
        }
    });
    let output = work.await;
    stop.store(true, Ordering::Relaxed);
    let (rss, ticks) = sampler.await??;
    let usage = rss
        .into_iter()
        .zip(ticks)
        .map(|(rss, ticks)| {
            let per_second: Vec<f64> = per_second_percent(&ticks, hz);
            let (first, last) = (
                ticks.first().context("no sample")?,
                ticks.last().context("no sample")?,
            );
            let cpu_seconds = (last.1 - first.1) as f64 / hz;
            // A stretch shorter than a second still has its average.
            let window = last
                .0
                .duration_since(first.0)
                .as_secs_f64()
                .max(TICK.as_secs_f64());
            Ok(Usage {
                rss_mib: Summary::of(&rss).context("no RSS sample")?,
                cpu_percent: Summary::of(&per_second)
                    .or_else(|| Summary::of(&[cpu_seconds / window * 100.0]))
                    .context("no CPU sample")?,
                cpu_seconds,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((usage, output))
}

/// CPU use per whole second between samples, in percent of one core.
fn per_second_percent(ticks: &[(Instant, u64)], hz: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut start = match ticks.first() {
        Some(&t) => t,
        None => return out,
    };
    for &(at, n) in ticks {
        let secs = at.duration_since(start.0).as_secs_f64();
        if secs >= 1.0 {
            out.push((n - start.1) as f64 / hz / secs * 100.0);
            start = (at, n);
        }
    }
    out
}

/// `VmRSS` of /proc/PID/status, KiB.
fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of /proc/PID/stat, clock ticks. Fields are counted after the command name,
/// which may itself hold spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // After ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_yield_rss_and_cpu_ticks() {
        assert_eq!(
            rss_kib("Name:\tnoded\nVmPeak:\t 9 kB\nVmRSS:\t   20480 kB\n"),
            Some(20480)
        );
        assert_eq!(rss_kib("Name:\tkthread\n"), None);
        let stat = "42 (no ded) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 7 1 2";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("42 (short) S 1"), None);
    }

    #[test]
    fn cpu_is_reported_per_whole_second() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let ticks = [
            (at(0), 0),
            (at(500), 10),
            (at(1000), 50),
            (at(1500), 60),
            (at(2000), 100),
        ];
        assert_eq!(per_second_percent(&ticks, 100.0), [50.0, 50.0]);
        assert!(per_second_percent(&ticks[..2], 100.0).is_empty());
    }
}
