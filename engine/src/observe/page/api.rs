//! `/api/status`: the operator page's data as JSON, for the page and for scripts. Counters
//! are read from the parts' telemetry at the moment of the request (the figures `/metrics`
//! serves); watermarks, states and the newest rows come from the live snapshot.

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Value, json};

use super::PageInfo;
use super::history::{History, PartKind};
use crate::clock::now_nanos;
use crate::live::{HISTORY, LATEST, Snapshot};
use crate::observe::process;
use crate::observe::status::{Phase, RunStatus};

/// Newest rows shown per pipeline.
pub const LATEST_ROWS: usize = 10;
/// Longest cell text shown (longer values are cut with an ellipsis).
const CELL_CHARS: usize = 80;

/// Seconds from `t` (ns since the epoch) to `now`.
fn lag(now: i64, t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| json!((now - t) as f64 / 1e9))
}

/// A time (ns since the epoch) as RFC 3339.
fn time(t: Option<i64>) -> Value {
    t.and_then(rfc3339).map_or(Value::Null, Value::String)
}

/// RFC 3339 with milliseconds, UTC.
fn rfc3339(ns: i64) -> Option<String> {
    let ts = arrow::array::TimestampNanosecondArray::from(vec![ns]).with_timezone("+00:00");
    let options = FormatOptions::default().with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.3fZ"));
    let f = ArrayFormatter::try_new(&ts, &options).ok()?;
    Some(f.value(0).to_string())
}

/// A rate, or null before the second sample.
fn rate(history: &History, kind: PartKind, name: &str, i: usize) -> Value {
    history
        .rates(kind, name)
        .map_or(Value::Null, |r| json!(r.per_second[i]))
}

/// The whole status document.
pub fn status(info: &PageInfo, run: &RunStatus, snap: &Snapshot, history: &History) -> Value {
    let now = now_nanos();
    let (ready, readiness) = run.readiness();
    let phase = match run.phase() {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Stopping => "stopping",
        Phase::Finished => "finished",
    };
    let checkpoint = info.checkpoints.as_ref().map(|c| {
        let counts = c.counts();
        json!({
            "age_seconds": c.age_seconds(),
            "taken": counts.taken,
            "failed": counts.failed,
            "last_bytes": counts.last_bytes,
            "last_duration_seconds": counts.last_duration.as_secs_f64(),
        })
    });
    let memory = process::memory();
    let sources: Vec<Value> = snap
        .sources
        .iter()
        .map(|s| {
            let c = s
                .telemetry
                .as_ref()
                .map_or_else(|| s.counts.clone(), |t| t.counts());
            let state = match (s.state, c.connection.label()) {
                ("active" | "idle", Some("down")) => "reconnecting",
                (state, _) => state,
            };
            json!({
                "name": s.name,
                "connector": s.connector,
                "state": state,
                "connection": c.connection.label(),
                "rows": c.rows,
                "rows_per_second": rate(history, PartKind::Source, &s.name, 0),
                "null_time_rows": c.null_time_rows,
                "skipped_total": c.skipped_total(),
                "skipped": c.skipped,
                "max_event_time": time(s.max_event_time),
                "watermark": time(s.watermark),
                "watermark_lag_seconds": lag(now, s.watermark),
                "last_rows_at": time(s.last_rows_at),
            })
        })
        .collect();
    let pipelines: Vec<Value> = snap
        .pipelines
        .iter()
        .map(|p| {
            let c = p
                .telemetry
                .as_ref()
                .map_or_else(|| p.counts.clone(), |t| t.counts());
            json!({
                "name": p.name,
                "target": p.target,
                "state": p.state,
                "rows_in": c.rows_in,
                "rows_out": c.rows_out,
                "rows_in_per_second": rate(history, PartKind::Pipeline, &p.name, 0),
                "rows_out_per_second": rate(history, PartKind::Pipeline, &p.name, 1),
                "windows_emitted": c.windows_emitted,
                "late_rows": c.late_rows,
                "row_errors": c.row_errors_total(),
                "errors": c.errors,
                "state_bytes": c.state_bytes,
                "open_windows": c.open_windows,
                "state_groups": c.state_groups,
                "windows_emitted_early": c.windows_emitted_early,
                "refused_rows": c.refused_rows,
                "join_unmatched_rows": c.join_unmatched_rows,
                "watermark": time(p.watermark),
                "watermark_lag_seconds": lag(now, p.watermark),
                "last_emit": time(p.last_emit),
            })
        })
        .collect();
    let sinks: Vec<Value> = snap
        .sinks
        .iter()
        .map(|k| {
            let c = k.counts_now();
            json!({
                "name": k.name,
                "connector": k.connector,
                "connected": c.connected,
                "rows": c.rows,
                "rows_per_second": rate(history, PartKind::Sink, &k.name, 0),
                "failures": c.failures,
                "uploads_ok": c.uploads_ok,
                "uploads_failed": c.uploads_failed,
                "uploaded_bytes": c.uploaded_bytes,
                "spill_files": c.spill_files,
                "spill_bytes": c.spill_bytes,
                "spill_oldest_age_seconds": c.spill_oldest_age_ms as f64 / 1e3,
                "dropped_files": c.dropped_files,
                "dropped_rows": c.dropped_rows,
                "published": c.published,
                "writes": c.writes,
            })
        })
        .collect();
    json!({
        "taken": time(Some(now)),
        "process": {
            "version": info.version,
            "features": info.features,
            "connectors": {"sources": info.sources, "sinks": info.sinks},
            "node": crate::node::id(),
            "uptime_seconds": info.started.elapsed().as_secs_f64(),
            "rss_bytes": memory.map(|m| m.0),
            "cpu_seconds": process::cpu_seconds(),
            "cpu_percent": history.cpu_percent(),
            "phase": phase,
            "ready": ready,
            "readiness": readiness,
            "checkpoint": checkpoint,
            "history_samples": history.len(),
            "history_bytes": history.bytes(),
        },
        "graph": &*snap.graph,
        "sources": sources,
        "pipelines": pipelines,
        "sinks": sinks,
        "latest": latest(snap),
    })
}

/// The newest rows of each pipeline, in dependency order: its `latest` table (windowed
/// pipelines), else its `history` table, the last [`LATEST_ROWS`] rows, as text.
fn latest(snap: &Snapshot) -> Value {
    let mut out = Vec::new();
    for p in &snap.pipelines {
        let (schema, table) = match snap.tables.get(&(LATEST, p.name.clone())) {
            Some(t) => (LATEST, t),
            None => match snap.tables.get(&(HISTORY, p.name.clone())) {
                Some(t) => (HISTORY, t),
                None => continue,
            },
        };
        let columns: Vec<&str> = table
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        out.push(json!({
                "pipeline": p.name,
                "table": format!("{schema}.{}", p.name),
                "columns": columns,
                "rows": newest_rows(&table.batches, LATEST_ROWS),
        }));
    }
    json!(out)
}

/// The last `n` rows of `batches`, newest first, each cell as text.
fn newest_rows(batches: &[RecordBatch], n: usize) -> Vec<Vec<Value>> {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for b in batches.iter().rev() {
        let Ok(formatters) = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        for r in (0..b.num_rows()).rev() {
            if rows.len() == n {
                return rows;
            }
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let text = f.value(r).to_string();
                        Value::String(if text.chars().count() > CELL_CHARS {
                            text.chars().take(CELL_CHARS).chain(['…']).collect()
                        } else {
                            text
                        })
                    })
                    .collect(),
            );
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray};

    use super::*;

    #[test]
    fn newest_rows_come_first_and_long_cells_are_cut() {
        let long = "x".repeat(200);
        let b = |names: Vec<&str>, v: Vec<Option<f64>>| {
            RecordBatch::try_from_iter([
                ("m", Arc::new(StringArray::from(names)) as _),
                ("v", Arc::new(Float64Array::from(v)) as _),
            ])
            .unwrap()
        };
        let batches = vec![
            b(vec!["a", "b"], vec![Some(1.0), Some(2.0)]),
            b(vec!["c", &long], vec![None, Some(4.5)]),
        ];
        let rows = newest_rows(&batches, 3);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][1], json!("4.5"));
        assert_eq!(rows[0][0].as_str().unwrap().chars().count(), CELL_CHARS + 1);
        assert_eq!(rows[1], vec![json!("c"), json!("")]);
        assert_eq!(rows[2], vec![json!("b"), json!("2.0")]);
        assert_eq!(time(Some(1_500_000_000)), json!("1970-01-01T00:00:01.500Z"));
    }
}
