//! The table every scenario prints: one [`Row`] per measurement, medians over runs, and
//! Switchboard-to-nchan ratios.

use std::fmt::Write as _;

use crate::{histogram::Snapshot, procstat::Usage};

/// One measurement of one scenario on one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    /// Scenario and variant, e.g. `fanout max` or `chat 1/s`.
    pub scenario: String,
    /// `switchboard` or `nchan`.
    pub server: String,
    /// Connections open during the measurement.
    pub conns: u64,
    /// Messages sent (published, or sent by chat clients).
    pub sent: u64,
    /// Stamped frames received.
    pub deliveries: u64,
    /// Deliveries expected but not received.
    pub lost: u64,
    /// Error envelopes received plus connections the server closed.
    pub errors: u64,
    /// Deliveries per second.
    pub rate: f64,
    /// Latency percentiles and maximum, in µs (`None` where nothing was timed).
    pub latency: Option<[u64; 4]>,
    /// Server memory at the end, in KiB.
    pub memory_kib: u64,
    /// Server memory above the baseline (before any connection), per connection, in KiB.
    pub kib_per_conn: Option<f64>,
    /// Server CPU seconds during the measurement.
    pub cpu_secs: f64,
    /// Server CPU µs per delivery.
    pub cpu_us_per_delivery: Option<f64>,
    /// Load generator CPU seconds during the measurement.
    pub client_cpu_secs: f64,
    /// CPU seconds everything else on the machine used during the measurement: the figures
    /// are only comparable when this is near zero.
    pub other_cpu_secs: f64,
    /// Anything unusual (error codes, close codes).
    pub note: String,
}

impl Row {
    /// Fills the latency columns from a histogram.
    pub(crate) fn set_latency(&mut self, h: &Snapshot) {
        self.latency =
            (h.count() > 0).then(|| [h.quantile(0.5), h.quantile(0.9), h.quantile(0.99), h.max()]);
    }

    /// Fills the memory columns from the usage at the end and the baseline.
    pub(crate) fn set_memory(&mut self, baseline: &Usage, now: &Usage) {
        self.memory_kib = now.memory_kib;
        if self.conns > 0 {
            self.kib_per_conn =
                Some((now.memory_kib as f64 - baseline.memory_kib as f64) / self.conns as f64);
        }
    }

    /// Fills the CPU columns from usage before and after.
    pub(crate) fn set_cpu(&mut self, before: &Usage, after: &Usage) {
        self.cpu_secs = after.cpu_secs - before.cpu_secs;
        if self.deliveries > 0 {
            self.cpu_us_per_delivery = Some(self.cpu_secs * 1e6 / self.deliveries as f64);
        }
    }
}

const HEADER: &str = "| scenario | server | conns | sent | deliveries | lost | errors | deliveries/s | p50 ms | p90 ms | p99 ms | max ms | server MiB | KiB/conn | server CPU s | CPU µs/delivery | client CPU s | other CPU s |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|";

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn line(r: &Row) -> String {
    let lat = r.latency.map_or_else(
        || vec!["-".to_owned(); 4],
        |l| l.iter().map(|&v| ms(v)).collect(),
    );
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {} | {:.2} | {:.2} |",
        r.scenario,
        r.server,
        r.conns,
        r.sent,
        r.deliveries,
        r.lost,
        r.errors,
        r.rate,
        lat[0],
        lat[1],
        lat[2],
        lat[3],
        r.memory_kib as f64 / 1024.0,
        opt(r.kib_per_conn, 2),
        r.cpu_secs,
        opt(r.cpu_us_per_delivery, 2),
        r.client_cpu_secs,
        r.other_cpu_secs,
    )
}

/// Prints one row to stderr as soon as it is measured, with its notes (the summary on stdout
/// follows at the end).
pub(crate) fn print_row(r: &Row) {
    eprintln!("{}", line(r));
    if !r.note.is_empty() {
        eprintln!("  note: {}", r.note);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of each column over rows of the same scenario and server.
pub(crate) fn median_row(rows: &[&Row]) -> Row {
    let m = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(|r| f(r)).collect());
    let mo = |f: &dyn Fn(&Row) -> Option<f64>| {
        let v: Vec<f64> = rows.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| median(v))
    };
    let lat = |i: usize| mo(&|r| r.latency.map(|l| l[i] as f64));
    let latency = match (lat(0), lat(1), lat(2), lat(3)) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([a as u64, b as u64, c as u64, d as u64]),
        _ => None,
    };
    Row {
        scenario: rows[0].scenario.clone(),
        server: rows[0].server.clone(),
        conns: m(&|r| r.conns as f64) as u64,
        sent: m(&|r| r.sent as f64) as u64,
        deliveries: m(&|r| r.deliveries as f64) as u64,
        lost: m(&|r| r.lost as f64) as u64,
        errors: m(&|r| r.errors as f64) as u64,
        rate: m(&|r| r.rate),
        latency,
        memory_kib: m(&|r| r.memory_kib as f64) as u64,
        kib_per_conn: mo(&|r| r.kib_per_conn),
        cpu_secs: m(&|r| r.cpu_secs),
        cpu_us_per_delivery: mo(&|r| r.cpu_us_per_delivery),
        client_cpu_secs: m(&|r| r.client_cpu_secs),
        other_cpu_secs: m(&|r| r.other_cpu_secs),
        note: String::new(),
    }
}

/// The summary: every run, then the median per (scenario, server), then the ratios of
/// Switchboard to nchan where both ran.
pub(crate) fn summary(rows: &[Row], runs: usize) -> String {
    let mut out = String::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let key = (r.scenario.clone(), r.server.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let medians: Vec<Row> = keys
        .iter()
        .map(|(s, v)| {
            let same: Vec<&Row> = rows
                .iter()
                .filter(|r| &r.scenario == s && &r.server == v)
                .collect();
            median_row(&same)
        })
        .collect();
    if runs > 1 {
        let _ = writeln!(out, "All runs:\n\n{HEADER}");
        for r in rows {
            let _ = writeln!(out, "{}", line(r));
        }
        let _ = writeln!(out, "\nMedians of {runs} runs:\n");
    }
    let _ = writeln!(out, "{HEADER}");
    for r in &medians {
        let _ = writeln!(out, "{}", line(r));
    }
    let mut ratios = String::new();
    for sb in medians.iter().filter(|r| r.server == "switchboard") {
        let Some(nc) = medians
            .iter()
            .find(|r| r.server == "nchan" && r.scenario == sb.scenario)
        else {
            continue;
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            ratios,
            "| {} | {} | {} | {} | {} |",
            sb.scenario,
            ratio(Some(sb.rate), Some(nc.rate)),
            ratio(sb.cpu_us_per_delivery, nc.cpu_us_per_delivery),
            ratio(sb.kib_per_conn, nc.kib_per_conn),
            ratio(
                sb.latency.map(|l| l[2] as f64),
                nc.latency.map(|l| l[2] as f64)
            ),
        );
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "\nSwitchboard / nchan (medians):\n\n| scenario | deliveries/s | CPU µs/delivery | KiB/conn | p99 |\n|---|--:|--:|--:|--:|\n{ratios}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        let row = |server: &str, rate: f64| Row {
            scenario: "fanout".into(),
            server: server.into(),
            rate,
            deliveries: 10,
            cpu_secs: 1.0,
            cpu_us_per_delivery: Some(rate / 10.0),
            latency: Some([1, 2, 3, 4]),
            ..Default::default()
        };
        let rows = vec![
            row("switchboard", 100.0),
            row("switchboard", 300.0),
            row("switchboard", 200.0),
            row("nchan", 100.0),
        ];
        let text = summary(&rows, 3);
        assert!(text.contains("Medians of 3 runs"), "{text}");
        assert!(text.contains("| fanout | 2.00x |"), "{text}");
        assert_eq!(median(vec![3.0, 1.0]), 2.0);
    }
}
