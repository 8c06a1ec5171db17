//! The system tables: pipelines, sources, source errors, watermarks and sinks, built from a
//! snapshot's counters.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;

use super::snapshot::Snapshot;

/// The system tables of `snap`, by name: the engine's, then the sources' own tables
/// (`sparkplug_nodes`).
pub fn tables(snap: &Snapshot) -> Vec<(&'static str, RecordBatch)> {
    let mut out = vec![
        ("pipelines", pipelines(snap)),
        ("sources", sources(snap)),
        ("source_errors", source_errors(snap)),
        ("watermarks", watermarks(snap)),
        ("sinks", sinks(snap)),
    ];
    out.extend(source_tables(snap));
    out
}

/// The tables sources keep of their own, each with a `source` column first, the rows of
/// every source that has one together.
fn source_tables(snap: &Snapshot) -> Vec<(&'static str, RecordBatch)> {
    let mut by_name: std::collections::BTreeMap<&'static str, Vec<RecordBatch>> =
        std::collections::BTreeMap::new();
    for s in &snap.sources {
        for (name, rows) in s.telemetry.iter().flat_map(|t| t.tables()) {
            let mut cols = vec![(
                "source",
                strings(std::iter::repeat_n(Some(s.name.as_str()), rows.num_rows())),
            )];
            let schema = rows.schema();
            cols.extend(
                schema
                    .fields()
                    .iter()
                    .zip(rows.columns())
                    .map(|(f, c)| (f.name().as_str(), Arc::clone(c))),
            );
            by_name.entry(name).or_default().push(batch(cols));
        }
    }
    by_name
        .into_iter()
        .filter_map(|(name, batches)| {
            let schema = batches[0].schema();
            match arrow::compute::concat_batches(&schema, &batches) {
                Ok(b) => Some((name, b)),
                Err(e) => {
                    tracing::warn!(table = name, error = %e, "sources' tables of one name differ: left out");
                    None
                }
            }
        })
        .collect()
}

fn strings<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(v))
}

fn counts(v: impl IntoIterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(v))
}

fn times(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter(v))
}

fn seconds(v: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(v))
}

/// Seconds from `t` to `now`.
fn lag(now: i64, t: Option<i64>) -> Option<f64> {
    t.map(|t| now.saturating_sub(t) as f64 / 1e9)
}

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).expect("columns of one table have one length")
}

fn pipelines(snap: &Snapshot) -> RecordBatch {
    let p = &snap.pipelines;
    batch(vec![
        ("name", strings(p.iter().map(|p| Some(p.name.as_str())))),
        ("target", strings(p.iter().map(|p| Some(p.target)))),
        ("state", strings(p.iter().map(|p| Some(p.state)))),
        ("rows_in", counts(p.iter().map(|p| p.counts.rows_in))),
        ("rows_out", counts(p.iter().map(|p| p.counts.rows_out))),
        ("late_rows", counts(p.iter().map(|p| p.counts.late_rows))),
        (
            "windows_emitted",
            counts(p.iter().map(|p| p.counts.windows_emitted)),
        ),
        ("errors", counts(p.iter().map(|p| p.counts.errors))),
        (
            "row_errors",
            counts(p.iter().map(|p| p.counts.row_errors_total())),
        ),
        (
            "state_bytes",
            counts(p.iter().map(|p| p.counts.state_bytes)),
        ),
        (
            "open_windows",
            counts(p.iter().map(|p| p.counts.open_windows)),
        ),
        (
            "state_groups",
            counts(p.iter().map(|p| p.counts.state_groups)),
        ),
        (
            "windows_emitted_early",
            counts(p.iter().map(|p| p.counts.windows_emitted_early)),
        ),
        (
            "refused_rows",
            counts(p.iter().map(|p| p.counts.refused_rows)),
        ),
        (
            "join_unmatched_rows",
            counts(p.iter().map(|p| p.counts.join_unmatched_rows)),
        ),
        (
            "latest_keys",
            counts(p.iter().map(|p| p.counts.latest_keys)),
        ),
        (
            "latest_evicted",
            counts(p.iter().map(|p| p.counts.latest_evicted)),
        ),
        ("last_emit", times(p.iter().map(|p| p.last_emit))),
        ("watermark", times(p.iter().map(|p| p.watermark))),
    ])
}

/// Counts by kind as one text: `malformed_json=3, oversized=1`.
fn by_kind(counts: &std::collections::BTreeMap<&'static str, u64>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sources(snap: &Snapshot) -> RecordBatch {
    let s = &snap.sources;
    let errors: Vec<String> = s.iter().map(|s| by_kind(&s.counts.skipped)).collect();
    batch(vec![
        ("name", strings(s.iter().map(|s| Some(s.name.as_str())))),
        (
            "connector",
            strings(s.iter().map(|s| Some(s.connector.as_str()))),
        ),
        ("state", strings(s.iter().map(|s| Some(s.state)))),
        (
            "connection",
            strings(s.iter().map(|s| s.counts.connection.label())),
        ),
        ("rows", counts(s.iter().map(|s| s.counts.rows))),
        (
            "null_time_rows",
            counts(s.iter().map(|s| s.counts.null_time_rows)),
        ),
        (
            "errors_total",
            counts(s.iter().map(|s| s.counts.skipped_total())),
        ),
        ("errors", strings(errors.iter().map(|e| Some(e.as_str())))),
        ("max_event_time", times(s.iter().map(|s| s.max_event_time))),
        (
            "lag_seconds",
            seconds(s.iter().map(|s| lag(snap.taken, s.max_event_time))),
        ),
        ("last_rows_at", times(s.iter().map(|s| s.last_rows_at))),
    ])
}

fn source_errors(snap: &Snapshot) -> RecordBatch {
    let rows: Vec<(&str, &str, u64)> = snap
        .sources
        .iter()
        .flat_map(|s| {
            s.counts
                .skipped
                .iter()
                .map(|(k, n)| (s.name.as_str(), *k, *n))
        })
        .collect();
    batch(vec![
        ("source", strings(rows.iter().map(|r| Some(r.0)))),
        ("kind", strings(rows.iter().map(|r| Some(r.1)))),
        ("count", counts(rows.iter().map(|r| r.2))),
    ])
}

fn watermarks(snap: &Snapshot) -> RecordBatch {
    let rows: Vec<(&str, &str, Option<i64>)> = snap
        .sources
        .iter()
        .map(|s| (s.name.as_str(), "source", s.watermark))
        .chain(
            snap.pipelines
                .iter()
                .map(|p| (p.name.as_str(), "pipeline", p.watermark)),
        )
        .collect();
    batch(vec![
        ("name", strings(rows.iter().map(|r| Some(r.0)))),
        ("kind", strings(rows.iter().map(|r| Some(r.1)))),
        ("watermark", times(rows.iter().map(|r| r.2))),
        (
            "lag_seconds",
            seconds(rows.iter().map(|r| lag(snap.taken, r.2))),
        ),
    ])
}

fn sinks(snap: &Snapshot) -> RecordBatch {
    let s = &snap.sinks;
    let writes: Vec<String> = s.iter().map(|s| by_kind(&s.counts.writes)).collect();
    batch(vec![
        ("name", strings(s.iter().map(|s| Some(s.name.as_str())))),
        (
            "connector",
            strings(s.iter().map(|s| Some(s.connector.as_str()))),
        ),
        ("rows", counts(s.iter().map(|s| s.counts.rows))),
        ("batches", counts(s.iter().map(|s| s.counts.batches))),
        ("failures", counts(s.iter().map(|s| s.counts.failures))),
        ("uploads_ok", counts(s.iter().map(|s| s.counts.uploads_ok))),
        (
            "uploads_failed",
            counts(s.iter().map(|s| s.counts.uploads_failed)),
        ),
        (
            "uploaded_bytes",
            counts(s.iter().map(|s| s.counts.uploaded_bytes)),
        ),
        (
            "spill_files",
            counts(s.iter().map(|s| s.counts.spill_files)),
        ),
        (
            "spill_bytes",
            counts(s.iter().map(|s| s.counts.spill_bytes)),
        ),
        (
            "spill_oldest_age_seconds",
            seconds(
                s.iter()
                    .map(|s| Some(s.counts.spill_oldest_age_ms as f64 / 1e3)),
            ),
        ),
        (
            "dropped_rows",
            counts(s.iter().map(|s| s.counts.dropped_rows)),
        ),
        (
            "quarantined",
            counts(s.iter().map(|s| s.counts.quarantined)),
        ),
        (
            "quarantine_deleted",
            counts(s.iter().map(|s| s.counts.quarantine_deleted)),
        ),
        ("writes", strings(writes.iter().map(|w| Some(w.as_str())))),
    ])
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, UInt64Type};

    use super::*;
    use crate::live::snapshot::{SinkStatus, SourceStatus};
    use crate::observe::telemetry::{Connection, SourceCounts};

    #[test]
    fn source_errors_by_kind_and_lag_from_the_snapshot_time() {
        let mut skipped = std::collections::BTreeMap::new();
        skipped.insert("malformed_json", 3);
        skipped.insert("oversized", 1);
        let snap = Snapshot {
            taken: 10_000_000_000,
            sources: vec![SourceStatus {
                name: "mqtt_in".into(),
                connector: "mqtt".into(),
                state: "active",
                counts: SourceCounts {
                    skipped,
                    connection: Connection::Down,
                    ..Default::default()
                },
                max_event_time: Some(7_500_000_000),
                ..Default::default()
            }],
            sinks: vec![SinkStatus {
                name: "cloud".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let tables: std::collections::BTreeMap<_, _> = tables(&snap).into_iter().collect();
        let s = &tables["sources"];
        assert_eq!(s.num_rows(), 1);
        let col = |b: &RecordBatch, n: &str| b.column_by_name(n).unwrap().clone();
        assert_eq!(
            col(s, "errors").as_string::<i32>().value(0),
            "malformed_json=3, oversized=1"
        );
        assert_eq!(
            col(s, "errors_total").as_primitive::<UInt64Type>().value(0),
            4
        );
        assert_eq!(col(s, "connection").as_string::<i32>().value(0), "down");
        assert_eq!(
            col(s, "lag_seconds").as_primitive::<Float64Type>().value(0),
            2.5
        );
        let e = &tables["source_errors"];
        assert_eq!(e.num_rows(), 2);
        assert_eq!(col(e, "kind").as_string::<i32>().value(1), "oversized");
        assert_eq!(col(e, "count").as_primitive::<UInt64Type>().value(0), 3);
        let w = &tables["watermarks"];
        assert_eq!(w.num_rows(), 1);
        assert!(col(w, "watermark").is_null(0));
        assert_eq!(tables["sinks"].num_rows(), 1);
        assert_eq!(tables["pipelines"].num_rows(), 0);
    }
}
