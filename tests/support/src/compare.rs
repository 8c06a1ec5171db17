//! Results compared with an independent computation: DataFusion batch SQL (with Weir's
//! functions) over the same input rows, rows as sorted strings, floats within a relative
//! 1e-9.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::array_value_to_string;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Runs `sql` in DataFusion's batch engine, with Weir's functions, over a table `t` holding
/// `rows`; the result as one batch.
pub async fn batch_sql(rows: &[RecordBatch], sql: &str) -> RecordBatch {
    let ctx = SessionContext::new();
    weir_udf::register(&ctx);
    let schema = rows[0].schema();
    let t = MemTable::try_new(schema, vec![rows.to_vec()]).unwrap();
    ctx.register_table("t", Arc::new(t)).unwrap();
    let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

/// Rows of a batch as sorted strings, floats with 12 decimals, times as zoneless nanoseconds
/// whatever their unit and zone.
pub fn rows_of(b: &RecordBatch) -> Vec<Vec<String>> {
    // text columns as Utf8 once (casting per row would be quadratic)
    let columns: Vec<arrow::array::ArrayRef> = b
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => {
                arrow::compute::cast(c, &DataType::Utf8).unwrap()
            }
            DataType::Timestamp(..) => arrow::compute::cast(
                c,
                &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            )
            .unwrap(),
            _ => Arc::clone(c),
        })
        .collect();
    let mut out: Vec<Vec<String>> = (0..b.num_rows())
        .map(|r| {
            columns
                .iter()
                .map(|c| match c.data_type() {
                    _ if c.is_null(r) => "null".into(),
                    DataType::Float64 => {
                        format!("{:.12}", c.as_primitive::<Float64Type>().value(r))
                    }
                    DataType::Utf8 => c.as_string::<i32>().value(r).to_string(),
                    _ => array_value_to_string(c, r).unwrap(),
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// Asserts two row sets are equal, floats within a relative 1e-9.
#[track_caller]
pub fn assert_rows_eq(got: &[Vec<String>], want: &[Vec<String>]) {
    assert_eq!(
        got.len(),
        want.len(),
        "row counts differ:\n got {got:?}\nwant {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        let same = g.len() == w.len()
            && g.iter().zip(w).all(|(a, b)| {
                a == b
                    || match (a.parse::<f64>(), b.parse::<f64>()) {
                        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                        _ => false,
                    }
            });
        assert!(same, "row differs:\n got {g:?}\nwant {w:?}");
    }
}

/// The rows of every visible Parquet file in `dir` (a file sink's finished files).
pub fn parquet_dir(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p: &std::path::PathBuf| {
        p.extension().is_some_and(|x| x == "parquet")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    });
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(p).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .collect()
}

/// All of `batches` as one (an empty batch of `schema`'s shape when there are none).
pub fn concat(batches: &[RecordBatch]) -> Option<RecordBatch> {
    let first = batches.first()?;
    Some(arrow::compute::concat_batches(&first.schema(), batches).unwrap())
}
