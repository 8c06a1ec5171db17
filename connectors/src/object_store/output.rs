//! What the object-store sink's files hold, the same on every node of a fleet: a stable
//! Parquet schema — event times as UTC microseconds (`TIMESTAMP(MICROS, isAdjustedToUTC)`,
//! what Spark, Trino/Athena, BigQuery, DuckDB and DataFusion all read as a timestamp), text as
//! plain UTF-8 strings — a schema version (a hash of the columns: nodes running the same
//! pipeline agree on it without talking), and key-value metadata naming the Weir version, the
//! node and the pipelines' plan fingerprints.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::file::metadata::KeyValue;

/// The type a column of `t` is written as.
fn stored(t: &DataType) -> DataType {
    match t {
        DataType::Timestamp(..) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

/// The schema rows of `schema` are written with.
pub fn file_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), stored(f.data_type()), true))
            .collect::<Vec<_>>(),
    ))
}

/// `batch` as [`file_schema`] says (times truncated to microseconds).
pub fn to_file(batch: &RecordBatch, schema: &SchemaRef) -> arrow::error::Result<RecordBatch> {
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<arrow::error::Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(Arc::clone(schema), cols)
}

/// The version of a file schema: 8 hex digits of a hash of its columns' names and types.
pub fn version(schema: &SchemaRef) -> String {
    let columns = columns(schema);
    format!(
        "{:08x}",
        weir_engine::checkpoint::stable_hash(columns.as_bytes()) >> 32
    )
}

/// `name type, ...`: the columns, for messages and the version.
pub use weir_engine::compile::columns;

/// The key-value metadata of every file: Weir's version, the node, the schema version, the
/// pipelines (name and plan fingerprint) writing to the sink.
pub fn metadata(node: &str, schema: &str, inputs: &[(String, String)]) -> Vec<KeyValue> {
    let pipelines = inputs
        .iter()
        .map(|(name, fp)| format!("{name}={fp}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        KeyValue::new("weir.version".into(), env!("CARGO_PKG_VERSION").to_string()),
        KeyValue::new("weir.node".into(), node.to_string()),
        KeyValue::new("weir.schema".into(), schema.to_string()),
        KeyValue::new("weir.pipelines".into(), pipelines),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringViewArray, TimestampNanosecondArray};

    #[test]
    fn times_become_utc_microseconds_and_text_plain_strings() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("machine", DataType::Utf8View, false),
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringViewArray::from(vec!["M1"])),
                Arc::new(TimestampNanosecondArray::from(vec![
                    1_767_225_600_123_456_789,
                ])),
            ],
        )
        .unwrap();
        let file = file_schema(&schema);
        assert_eq!(file.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            file.field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let out = to_file(&batch, &file).unwrap();
        let t = out
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(t.value(0), 1_767_225_600_123_456);
        assert_eq!(version(&file), version(&file_schema(&schema)), "stable");
        let other = Arc::new(Schema::new(vec![Field::new(
            "machine",
            DataType::Utf8,
            true,
        )]));
        assert_ne!(version(&file), version(&other));
    }
}
