//! The filter every pipeline reading a file source applies first, evaluated by the Parquet
//! reader itself: row groups whose statistics show that no row can pass are skipped, and in
//! the others it decodes the filter's columns, and the other columns only for the rows that
//! pass. Each row the reader hands on carries its row number in the file, so the source's
//! position stays exact.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
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

/// Row-group statistics of a Parquet file, as DataFusion's pruning asks for them.
struct RowGroupStatistics<'a> {
    meta: &'a ArrowReaderMetadata,
    declared: &'a SchemaRef,
}

impl RowGroupStatistics<'_> {
    fn converter(&self, column: &datafusion::common::Column) -> Option<StatisticsConverter<'_>> {
        let file = self.meta.schema();
        let name = file
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(&column.name))?
            .name()
            .clone();
        StatisticsConverter::try_new(&name, file, self.meta.parquet_schema()).ok()
    }

    /// `array` as the declared type of `column` (what the predicate compares with).
    fn declared(&self, column: &datafusion::common::Column, array: ArrayRef) -> Option<ArrayRef> {
        let t = self
            .declared
            .field_with_name(&column.name)
            .ok()?
            .data_type();
        if array.data_type() == t {
            Some(array)
        } else {
            arrow::compute::cast(&array, t).ok()
        }
    }
}

impl PruningStatistics for RowGroupStatistics<'_> {
    fn min_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        let rgs = self.meta.metadata().row_groups();
        let a = self.converter(column)?.row_group_mins(rgs.iter()).ok()?;
        self.declared(column, a)
    }

    fn max_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        let rgs = self.meta.metadata().row_groups();
        let a = self.converter(column)?.row_group_maxes(rgs.iter()).ok()?;
        self.declared(column, a)
    }

    fn num_containers(&self) -> usize {
        self.meta.metadata().num_row_groups()
    }

    fn null_counts(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        let rgs = self.meta.metadata().row_groups();
        let a = self
            .converter(column)?
            .row_group_null_counts(rgs.iter())
            .ok()?;
        Some(Arc::new(a))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let rows: UInt64Array = self
            .meta
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| Some(rg.num_rows().max(0) as u64))
            .collect();
        Some(Arc::new(rows))
    }

    fn contained(
        &self,
        _column: &datafusion::common::Column,
        _values: &std::collections::HashSet<datafusion::common::ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// Per row group of the file: whether `filter` may be true for one of its rows, by its
/// min/max statistics (true where they cannot tell).
pub fn row_groups(
    filter: &Arc<dyn PhysicalExpr>,
    declared: &SchemaRef,
    meta: &ArrowReaderMetadata,
) -> Vec<bool> {
    let all = vec![true; meta.metadata().num_row_groups()];
    let Some(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(declared))
        .build(Arc::clone(filter))
    else {
        return all;
    };
    pruning
        .prune(&RowGroupStatistics { meta, declared })
        .unwrap_or(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Schema;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::file::properties::WriterProperties;

    /// A file of three row groups, sensors `a`, `b`, `c` in turn, three rows each.
    fn file() -> bytes::Bytes {
        let batch = RecordBatch::try_from_iter([
            (
                "sensor",
                Arc::new(StringArray::from_iter_values([
                    "a", "a", "a", "b", "b", "b", "c", "c", "c",
                ])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from_iter_values(0..9)) as ArrayRef,
            ),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(3))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        bytes::Bytes::from(out)
    }

    fn sensor_is(s: &str) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(
            Arc::new(Column::new("sensor", 0)),
            Operator::Eq,
            Arc::new(Literal::new(ScalarValue::Utf8View(Some(s.into())))),
        ))
    }

    #[test]
    fn statistics_skip_row_groups_and_the_row_filter_keeps_row_numbers() {
        let declared = Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let data = file();
        let options = ArrowReaderOptions::new()
            .with_virtual_columns(vec![row_number_field()])
            .unwrap();
        let meta = ArrowReaderMetadata::load(&data, options).unwrap();
        assert_eq!(
            row_groups(&sensor_is("b"), &declared, &meta),
            vec![false, true, false]
        );
        assert_eq!(
            row_groups(&sensor_is("z"), &declared, &meta),
            vec![false; 3]
        );
        let filter = row_filter(&sensor_is("c"), &declared, &meta, meta.parquet_schema()).unwrap();
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::new_with_metadata(data, meta)
                .with_row_filter(filter)
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 3);
        assert_eq!(next_row(batches.last().unwrap()), Some(9));
    }
}
