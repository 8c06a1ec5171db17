//! The filter every pipeline reading a file source applies first, evaluated by the Parquet
//! reader itself: it decodes the filter's columns, and the other columns only for the rows
//! that pass. Each row the reader hands on carries its row number in the file, so the
//! source's position stays exact.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderMetadata, RowFilter};
use parquet::schema::types::SchemaDescriptor;

/// The name of the virtual column with each row's number in the file.
pub const ROW_NUMBER: &str = "__weir_row_number";

/// The row-number column the reader adds to each batch (last).
pub fn row_number_field() -> Arc<Field> {
    Arc::new(
        Field::new(ROW_NUMBER, DataType::Int64, false)
            .with_extension_type(parquet::arrow::RowNumber),
    )
}

/// The file row after the last row of `batch` (read with [`row_number_field`]).
pub fn next_row(batch: &RecordBatch) -> Option<u64> {
    let n = batch
        .column_by_name(ROW_NUMBER)?
        .as_primitive::<Int64Type>();
    (!n.is_empty()).then(|| n.value(n.len() - 1) as u64 + 1)
}

/// The source columns `filter` reads.
fn columns_of(filter: &Arc<dyn PhysicalExpr>) -> Vec<usize> {
    let mut cols = Vec::new();
    let _ = filter.apply(|e| {
        if let Some(c) = e.downcast_ref::<Column>() {
            cols.push(c.index());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    cols.sort_unstable();
    cols.dedup();
    cols
}

/// The reader's row filter for `filter` (over the source's columns `declared`) in a file of
/// Arrow schema `file` and Parquet schema `parquet`; `None` when the file lacks one of its
/// columns (the pipelines filter those rows).
pub fn row_filter(
    filter: &Arc<dyn PhysicalExpr>,
    declared: &SchemaRef,
    meta: &ArrowReaderMetadata,
    parquet: &SchemaDescriptor,
) -> Option<RowFilter> {
    let file = meta.schema();
    let used = columns_of(filter);
    // per source column the filter reads: its column in the file
    let mut in_file = Vec::new();
    for &c in &used {
        let name = declared.field(c).name();
        let i = file
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name) && !f.name().eq(ROW_NUMBER))?;
        in_file.push((c, i));
    }
    in_file.sort_by_key(|(_, i)| *i);
    // the reader hands the predicate those columns in file order
    let position = |c: usize| in_file.iter().position(|(s, _)| *s == c);
    let remapped = Arc::clone(filter)
        .transform_up(|e| match e.downcast_ref::<Column>() {
            Some(col) => Ok(Transformed::yes(Arc::new(Column::new(
                col.name(),
                position(col.index()).expect("a column the filter reads"),
            )) as Arc<dyn PhysicalExpr>)),
            None => Ok(Transformed::no(e)),
        })
        .ok()?
        .data;
    let types: Vec<DataType> = in_file
        .iter()
        .map(|(c, _)| declared.field(*c).data_type().clone())
        .collect();
    let mask = ProjectionMask::roots(parquet, in_file.iter().map(|(_, i)| *i));
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        // as the pipelines see the columns: the declared types
        let cols = batch
            .columns()
            .iter()
            .zip(&types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(Arc::clone(c))
                } else {
                    arrow::compute::cast(c, t)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .zip(&types)
            .map(|(f, t)| f.as_ref().clone().with_data_type(t.clone()))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols)?;
        let out = remapped
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| arrow::error::ArrowError::ComputeError(e.to_string()))?;
        let mask: BooleanArray = out.as_boolean().clone();
        // null is not true: the row is left out, as a WHERE does
        Ok(match mask.nulls() {
            Some(_) => arrow::compute::prep_null_mask_filter(&mask),
            None => mask,
        })
    });
    Some(RowFilter::new(vec![Box::new(predicate)]))
}
