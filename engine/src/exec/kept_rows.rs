//! Rows a join of two streams keeps for matching: the batches they came in (each dropped
//! once none of its rows is kept) and, per encoded join key, the kept rows in time order.

use std::collections::{HashMap, VecDeque};

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, TimestampNanosecondArray, new_null_array,
};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatchOptions;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;

/// How the rows of both sides of a stream join are timed and keyed.
pub struct SideKeys {
    exprs: [Vec<Arc<dyn PhysicalExpr>>; 2],
    types: Vec<DataType>,
    time: [usize; 2],
    converter: RowConverter,
}

impl SideKeys {
    /// Keys `exprs` (per side) of `types`, event times in columns `time` (per side).
    pub fn new(
        exprs: [Vec<Arc<dyn PhysicalExpr>>; 2],
        types: Vec<DataType>,
        time: [usize; 2],
    ) -> Result<Self> {
        let converter =
            RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        Ok(Self {
            exprs,
            types,
            time,
            converter,
        })
    }

    /// The event times, the key columns and the encoded keys of a batch of side `s`.
    pub fn read(
        &self,
        s: usize,
        batch: &RecordBatch,
    ) -> Result<(TimestampNanosecondArray, Vec<ArrayRef>, Rows)> {
        let times = time_column(batch, self.time[s])?;
        let keys = key_columns(batch, &self.exprs[s], &self.types)?;
        let encoded = self.converter.convert_columns(&keys)?;
        Ok((times, keys, encoded))
    }
}

/// Column `col` of `batch`, an event-time column.
pub fn time_column(batch: &RecordBatch, col: usize) -> Result<TimestampNanosecondArray> {
    batch
        .column(col)
        .as_primitive_opt::<TimestampNanosecondType>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("a join's time column is not a timestamp".into()))
}

/// The join keys `exprs` over `batch`, each cast to its type in `types` (the other side's
/// keys have the same types, so that equal values encode equally).
pub fn key_columns(
    batch: &RecordBatch,
    exprs: &[Arc<dyn PhysicalExpr>],
    types: &[DataType],
) -> Result<Vec<ArrayRef>> {
    let n = batch.num_rows();
    exprs
        .iter()
        .zip(types)
        .map(|(e, t)| {
            let a = e.evaluate(batch)?.into_array(n)?;
            if a.data_type() == t {
                Ok(a)
            } else {
                Ok(arrow::compute::cast(&a, t)?)
            }
        })
        .collect()
}

/// One kept row: its time and where it is.
#[derive(Debug, Clone, Copy)]
pub struct KeptRow {
    /// Its event time (ns).
    pub time: i64,
    batch: u64,
    row: u32,
}

/// Kept rows of one side of a join.
#[derive(Default)]
pub struct KeptRows {
    batches: HashMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    /// Keys hashed with DataFusion's fast hash (the default one is built to resist floods
    /// of chosen keys, which a per-row join cannot afford; keys come from the plant).
    by_key: HashMap<Box<[u8]>, Vec<KeptRow>, datafusion::common::hash_utils::RandomState>,
    /// Per added batch, in arrival order: its latest time and its keys, so that releasing
    /// looks only at the keys of batches old enough.
    pending: VecDeque<(i64, Vec<Box<[u8]>>)>,
    bytes: usize,
}

impl KeptRows {
    /// Keeps every row of `batch`; `keys[i]` and `times[i]` are row i's encoded key and time.
    pub fn add<'a>(
        &mut self,
        batch: RecordBatch,
        keys: impl Iterator<Item = &'a [u8]>,
        times: impl Iterator<Item = i64>,
    ) {
        if batch.num_rows() == 0 {
            return;
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.bytes += batch.get_array_memory_size();
        let mut latest = i64::MIN;
        let mut batch_keys: Vec<Box<[u8]>> = Vec::new();
        for (row, (key, time)) in keys.zip(times).enumerate() {
            latest = latest.max(time);
            let row = KeptRow {
                time,
                batch: id,
                row: row as u32,
            };
            let rows = match self.by_key.get_mut(key) {
                Some(rows) => rows,
                None => self.by_key.entry(key.into()).or_default(),
            };
            if rows.last().is_none_or(|r| r.time <= time) {
                rows.push(row);
            } else {
                let at = rows.partition_point(|r| r.time <= time);
                rows.insert(at, row);
            }
            if batch_keys.last().is_none_or(|k| **k != *key) {
                batch_keys.push(key.into());
            }
        }
        batch_keys.sort_unstable();
        batch_keys.dedup();
        self.pending.push_back((latest, batch_keys));
        let n = batch.num_rows();
        self.batches.insert(id, (batch, n));
    }

    /// The rows kept for `key`, in time order.
    pub fn of(&self, key: &[u8]) -> &[KeptRow] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    /// For the keys of the batches whose rows are all at or before `upto` (in arrival order),
    /// drops the first `drop(rows)` of the key's rows (in time order). A batch behind a later
    /// one waits for it: rows may be kept a little longer, never released early.
    pub fn release(&mut self, upto: i64, mut drop: impl FnMut(&[KeptRow]) -> usize) {
        let mut released: HashMap<u64, usize> = HashMap::new();
        while self
            .pending
            .front()
            .is_some_and(|(latest, _)| *latest <= upto)
        {
            let (_, keys) = self.pending.pop_front().expect("checked");
            for key in keys {
                let Some(rows) = self.by_key.get_mut(&key) else {
                    continue;
                };
                let n = drop(rows).min(rows.len());
                for r in rows.drain(..n) {
                    *released.entry(r.batch).or_default() += 1;
                }
                if rows.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
        for (b, n) in released {
            if let Some(entry) = self.batches.get_mut(&b) {
                entry.1 -= n;
                if entry.1 == 0 {
                    let (batch, _) = self.batches.remove(&b).expect("present");
                    self.bytes = self.bytes.saturating_sub(batch.get_array_memory_size());
                }
            }
        }
    }

    /// The columns (of `schema`) of `picks`, in order: a kept row, or nulls.
    pub fn columns(&self, picks: &[Option<KeptRow>], schema: &SchemaRef) -> Result<Vec<ArrayRef>> {
        let ids: Vec<u64> = self.batches.keys().copied().collect();
        let at: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, b)| (*b, i)).collect();
        let nulls = ids.len();
        let index: Vec<(usize, usize)> = picks
            .iter()
            .map(|p| match p {
                Some(r) => (at[&r.batch], r.row as usize),
                None => (nulls, 0),
            })
            .collect();
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, f)| {
                let null = new_null_array(f.data_type(), 1);
                let mut arrays: Vec<&dyn Array> = ids
                    .iter()
                    .map(|b| self.batches[b].0.column(c).as_ref())
                    .collect();
                arrays.push(null.as_ref());
                Ok(interleave(&arrays, &index)?)
            })
            .collect()
    }

    /// Every kept row as one batch (for a checkpoint); `None` when none is kept.
    pub fn snapshot(&self) -> Result<Option<RecordBatch>> {
        let Some((first, _)) = self.batches.values().next() else {
            return Ok(None);
        };
        let schema = first.schema();
        let mut picks: Vec<Option<KeptRow>> =
            self.by_key.values().flatten().copied().map(Some).collect();
        picks.sort_unstable_by_key(|p| p.map(|r| (r.batch, r.row)));
        let cols = self.columns(&picks, &schema)?;
        Ok(Some(RecordBatch::try_new_with_options(
            schema,
            cols,
            &RecordBatchOptions::new().with_row_count(Some(picks.len())),
        )?))
    }

    /// Approximate bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rows kept.
    pub fn len(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    /// Drops every row.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}
