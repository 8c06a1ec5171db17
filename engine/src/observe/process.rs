//! Process figures (memory) read from `/proc/self`, set as gauges at each scrape, and the
//! open-files limit raised at start.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use super::telemetry::{PROCESS_RESIDENT_MEMORY, PROCESS_START_TIME, PROCESS_VIRTUAL_MEMORY};

/// Sets `process_resident_memory_bytes`, `process_virtual_memory_bytes` and
/// `process_start_time_seconds` (Prometheus' usual names).
/// Figures that cannot be read (not Linux) are left out.
pub fn record() {
    static START: OnceLock<f64> = OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    });
    PROCESS_START_TIME.gauge_with(&[]).set(start);
    if let Some((rss, vm)) = memory() {
        PROCESS_RESIDENT_MEMORY.gauge_with(&[]).set(rss as f64);
        PROCESS_VIRTUAL_MEMORY.gauge_with(&[]).set(vm as f64);
    }
}

/// Raises the soft limit of open files to the hard limit (Unix), so that the pipelines'
/// files and connections do not run out at the usual soft limit of 1024; returns the soft
/// limit before and after when it was raised (`None` for no limit).
pub fn raise_open_files_limit() -> std::io::Result<Option<(Option<u64>, Option<u64>)>> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current == limit.maximum {
            return Ok(None);
        }
        let before = limit.current;
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
        Ok(Some((before, limit.maximum)))
    }
    #[cfg(not(unix))]
    {
        Ok(None)
    }
}

/// The nice value of the threads that serve live state (Flight SQL queries, the latest
/// tables): the lowest priority, so that they take only the CPU the pipelines leave.
#[cfg(target_os = "linux")]
const SERVING_NICE: i32 = 19;

/// Gives the calling thread (`what`: the Flight SQL server's, the latest tables') the lowest
/// CPU priority, below the dataflow's (Linux: the nice value is per thread).
pub fn lower_thread_priority(what: &str) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, SERVING_NICE) {
        tracing::debug!(error = %e, thread = what, "cannot lower the thread's priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = what;
}

/// CPU time this process has used (user and system, every thread), in seconds (Linux).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15; the command name in
/// parentheses may hold spaces).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's clock ticks per second (`USER_HZ`, 100 on every Linux architecture).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// Resident and virtual memory of this process in bytes (Linux).
pub fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss = status_kib(&status, "VmRSS:")?;
    let vm = status_kib(&status, "VmSize:")?;
    Some((rss * 1024, vm * 1024))
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_a_name_with_spaces() {
        let stat = "4711 (weir run x) S 1 4711 4711 0 -1 4194560 1266 0 0 0 250 31 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(281));
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn reads_status_lines() {
        let s = "Name:\tweir\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(s, "VmSize:"), Some(123456));
        assert_eq!(status_kib(s, "VmSwap:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_resident_memory() {
        let before = memory().unwrap().0;
        assert!(before > 1024 * 1024);
        let block = vec![1u8; 64 << 20];
        let after = memory().unwrap().0;
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(std::hint::black_box(block));
    }
}
