//! Reading what `weir run` printed: times of the stdout sink's JSON rows, and the run
//! summary's per-source lines.

use std::collections::BTreeMap;

use serde_json::Value;

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Milliseconds since the epoch of a time printed by the stdout sink.
pub fn time_ms(v: &Value) -> i64 {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(v.as_str().unwrap()).unwrap()
        / 1_000_000
}

/// The run summary line of source `name`.
fn summary_line<'a>(stderr: &'a str, name: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("source {name}:")))
        .unwrap_or_else(|| panic!("no summary for {name}:\n{stderr}"))
}

/// Counts per skip reason from the run summary line of source `name`.
pub fn skipped(stderr: &str, name: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let line = summary_line(stderr, name);
    if let Some(list) = line.split_once('(').map(|(_, r)| r.trim_end_matches(')')) {
        for item in list.split(", ") {
            let (reason, n) = item.rsplit_once(' ').unwrap();
            out.insert(reason.to_string(), n.parse().unwrap());
        }
    }
    out
}

/// Rows in the summary line of source `name`.
pub fn summary_rows(stderr: &str, name: &str) -> u64 {
    let line = summary_line(stderr, name);
    line.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
