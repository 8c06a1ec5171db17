//! Makes batches match a source's declared columns: picks columns by name and casts them
//! to the declared types.

use std::sync::Arc;

use arrow::array::{ArrayRef, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// Columns of `batch` matching `schema` by name (case-insensitive), cast to its types.
/// A declared column missing from the batch is all nulls; a value that does not convert
/// becomes null.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> arrow::error::Result<RecordBatch> {
    let have = batch.schema();
    let opts = CastOptions {
        safe: true,
        ..Default::default()
    };
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            let found = have
                .fields()
                .iter()
                .position(|h| h.name().eq_ignore_ascii_case(f.name()));
            match found {
                Some(i) => {
                    let c = batch.column(i);
                    if c.data_type() == f.data_type() {
                        Ok(Arc::clone(c))
                    } else {
                        cast_with_options(c, f.data_type(), &opts)
                    }
                }
                None => Ok(new_null_array(f.data_type(), batch.num_rows())),
            }
        })
        .collect::<arrow::error::Result<Vec<ArrayRef>>>()?;
    let relaxed = Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let target = if cols
        .iter()
        .zip(schema.fields())
        .all(|(c, f)| f.is_nullable() || c.null_count() == 0)
    {
        Arc::clone(schema)
    } else {
        relaxed
    };
    RecordBatch::try_new(target, cols)
}
