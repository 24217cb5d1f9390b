//! What a server process costs, read from `/proc`: resident memory and CPU time, for one
//! process (the host) or a process and its children (nginx's master and workers).

use std::{fs, sync::OnceLock};

use anyhow::Context as _;

/// Memory and CPU of a process (tree) at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    /// Resident memory in KiB: `VmRSS` for one process; for a tree, the sum of `Pss`
    /// (proportional set size), so pages shared by nginx's processes count once.
    pub memory_kib: u64,
    /// User + system CPU time, in seconds.
    pub cpu_secs: f64,
}

/// `VmRSS` and CPU time of `pid`.
pub(crate) fn process(pid: u32) -> anyhow::Result<Usage> {
    Ok(Usage {
        memory_kib: status_kib(pid, "VmRSS:")?,
        cpu_secs: cpu_secs(pid)?,
    })
}

/// The sum of `Pss` and CPU time over `pid` and its direct children.
pub(crate) fn tree(pid: u32) -> anyhow::Result<Usage> {
    let mut total = Usage::default();
    for p in std::iter::once(pid).chain(children(pid)) {
        total.memory_kib += smaps_rollup_kib(p, "Pss:")?;
        total.cpu_secs += cpu_secs(p)?;
    }
    Ok(total)
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    kib_line(&text, key).with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// A `kB` line of `/proc/<pid>/smaps_rollup`.
fn smaps_rollup_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
    kib_line(&text, key).with_context(|| format!("no {key} in /proc/{pid}/smaps_rollup"))
}

fn kib_line(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` of `/proc/<pid>/stat`, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let fields = stat_fields(pid)?;
    // After the command name: field 3 is the state, so utime (14) and stime (15) are at
    // indices 11 and 12.
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum::<Option<u64>>()
        .with_context(|| format!("malformed /proc/{pid}/stat"))?;
    Ok(ticks as f64 / clock_ticks())
}

/// The fields of `/proc/<pid>/stat` after the `(command name)`.
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .with_context(|| format!("malformed /proc/{pid}/stat"))?;
    Ok(after.split_whitespace().map(str::to_owned).collect())
}

/// CPU time the whole machine has spent busy (all cores, every state but idle and iowait),
/// in seconds, from the first line of `/proc/stat`.
pub(crate) fn machine_busy_secs() -> f64 {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / clock_ticks()
}

/// Processes whose parent is `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            stat_fields(p)
                .ok()
                .and_then(|f| f.get(1).and_then(|pp| pp.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, almost always 100).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let usage = process(me).unwrap();
        assert!(usage.memory_kib > 0);
        assert!(usage.cpu_secs >= 0.0);
        assert!(tree(me).unwrap().memory_kib > 0);
        assert!(machine_busy_secs() > 0.0);
    }

    #[test]
    fn parses_kib_lines() {
        assert_eq!(
            kib_line("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"),
            Some(1234)
        );
        assert_eq!(kib_line("Name:\tx\n", "VmRSS:"), None);
    }
}
