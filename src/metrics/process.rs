//! The process's own figures under Prometheus' standard `process_*` names (open descriptors
//! and their limit, resident memory, CPU time, start time), read from `/proc/self` when a
//! scrape asks: nothing is kept between scrapes, and a figure that cannot be read is left
//! out rather than reported as 0.

use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// A registry without the proxy's prefix, holding the collector.
pub(super) fn registry() -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Process));
    r
}

#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: Option<f64>| {
            let Some(value) = value else { return Ok(()) };
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        gauge(
            "process_open_fds",
            "Number of open file descriptors",
            open_fds(),
        )?;
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit)",
            max_fds(),
        )?;
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_bytes(),
        )?;
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            start_time(),
        )?;
        if let Some(seconds) = stat().and_then(|s| cpu_seconds(&s)) {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Entries of `/proc/self/fd` (the one `read_dir` holds open included, as other exporters
/// count it).
fn open_fds() -> Option<f64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count() as f64)
}

fn max_fds() -> Option<f64> {
    let limit = crate::fdlimit::limits()?;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as f64)
}

/// `/proc/self/statm`'s second field, in pages.
fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * sysconf(libc::_SC_PAGESIZE)?)
}

/// The boot time (`/proc/stat`'s btime) plus the process's start in ticks after boot;
/// read once, it does not change.
fn start_time() -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot: f64 = proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let ticks: f64 = fields_after_comm(&stat()?).get(19)?.parse().ok()?;
        Some(boot + ticks / sysconf(libc::_SC_CLK_TCK)?)
    })
}

fn cpu_seconds(stat: &str) -> Option<f64> {
    let fields = fields_after_comm(stat);
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / sysconf(libc::_SC_CLK_TCK)?)
}

fn stat() -> Option<String> {
    std::fs::read_to_string("/proc/self/stat").ok()
}

/// `/proc/self/stat`'s fields after the command name (which may hold spaces and
/// parentheses, so it ends at the last ')'): index 0 is field 3 (state).
fn fields_after_comm(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf only reads its argument.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let open = open_fds().unwrap();
        assert!(open >= 3.0 && open < max_fds().unwrap(), "{open}");
        assert!(resident_bytes().unwrap() > 1e6);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = start_time().unwrap();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert!(cpu_seconds(&stat().unwrap()).unwrap() >= 0.0);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 12345 0 0";
        let fields = fields_after_comm(stat);
        assert_eq!(fields[0], "S");
        assert_eq!(fields[11], "250");
        assert_eq!(fields[19], "12345");
    }
}
