//! What every bench shares: quantiles, a check that the machine is quiet before measuring, and
//! reading the server's metrics.

use std::fs;
use std::thread;
use std::time::Duration;

use camgraph::client;

/// The value at quantile `q` (nearest rank) of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (busy, total) jiffies of all cores together, from the first line of /proc/stat.
pub(crate) fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Measures for one second how busy the machine is before starting, and warns if something else
/// is using the CPU: on a small machine that skews every figure.
pub(crate) fn warn_if_busy() {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let before = machine_jiffies();
    thread::sleep(Duration::from_secs(1));
    if let (Some((b0, t0)), Some((b1, t1))) = (before, machine_jiffies()) {
        let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0;
        println!("machine: {cores} cores, {busy:.0} % busy (all cores) in the second before start");
        if busy > 10.0 {
            println!("warning: something else is using the CPU; figures below are pessimistic");
        }
    }
}

/// The sum of every sample of metric `name` whose labels contain all of `labels`.
pub(crate) fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let rest = key.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|want| rest.contains(want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The server's /metrics text (empty if it does not answer).
pub(crate) fn scrape(base: &str) -> String {
    client::get(&format!("{base}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
}
