//! Helpers shared by the function tests.
#![allow(dead_code)]

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use weir_udf::moment_functions::MomentKind;

/// SQL names of the moment functions.
pub fn moment_names() -> Vec<&'static str> {
    MomentKind::ALL.iter().map(|(_, name, _)| *name).collect()
}

/// `f(v), g(v), ...` for every moment function.
pub fn moment_calls() -> String {
    moment_names()
        .iter()
        .map(|f| format!("{f}(v)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A context with Weir's functions and table `t(k BIGINT, ts TIMESTAMP, v DOUBLE)` (`ts` from
/// seconds), split into `parts` partitions of batches of `batch` rows.
pub async fn table(
    keys: &[i64],
    ts_s: &[f64],
    v: &[f64],
    batch: usize,
    parts: usize,
) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(parts));
    weir_udf::register(&ctx);
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("v", DataType::Float64, false),
    ]));
    let mut partitions = vec![vec![]; parts];
    for (i, s) in (0..v.len()).step_by(batch).enumerate() {
        let e = (s + batch).min(v.len());
        partitions[i % parts].push(
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(keys[s..e].to_vec())),
                    Arc::new(TimestampNanosecondArray::from_iter_values(
                        ts_s[s..e].iter().map(|t| (t * 1e9).round() as i64),
                    )),
                    Arc::new(Float64Array::from(v[s..e].to_vec())),
                ],
            )
            .unwrap(),
        );
    }
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, partitions).unwrap()),
    )
    .unwrap();
    ctx
}

/// Relative closeness.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}
