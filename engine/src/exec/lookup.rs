//! A stream joined with a reference table: a hash lookup per row on the join keys in the
//! table version current when the batch is processed (the index is built once per version).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::make_comparator;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, UInt32Builder,
};
use arrow::compute::SortOptions;
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatchOptions;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;

use super::chain::{Chain, expr_reads};
use super::kept_rows::key_columns;
use crate::reference::ReferenceTable;

/// Which rows a lookup join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// Stream rows with a matching table row, once per match.
    Inner,
    /// Every stream row: with each matching table row, or once with nulls.
    Left,
    /// Stream rows with a matching table row, once, without table columns (`IN`, `EXISTS`).
    Semi,
    /// Stream rows without a matching table row, without table columns (`NOT IN`, `NOT EXISTS`).
    Anti,
}

impl LookupKind {
    /// As written in SQL.
    pub fn name(self) -> &'static str {
        match self {
            LookupKind::Inner => "INNER",
            LookupKind::Left => "LEFT",
            LookupKind::Semi => "SEMI (IN/EXISTS)",
            LookupKind::Anti => "ANTI (NOT IN/NOT EXISTS)",
        }
    }
}

/// How a lookup join is planned.
#[derive(Debug)]
pub struct LookupPlan {
    /// The table.
    pub table: Arc<ReferenceTable>,
    /// Steps over the table's rows before the join (its projection and filters).
    pub table_chain: Chain,
    /// Key expressions over the stream's rows.
    pub stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Key expressions over the table side's rows, in the same order.
    pub table_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Extra predicate over the columns of both sides (the left input's first).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Which rows are kept.
    pub kind: LookupKind,
    /// True when the stream is the left input (its columns come first).
    pub stream_first: bool,
    /// Columns of the table side.
    pub table_width: usize,
    /// Output columns.
    pub schema: SchemaRef,
}

/// Hashes of the keys' values (DataFusion's, as its hash join uses them).
const KEY_HASHES: RandomState = RandomState::with_seed(0x5765_6972);

/// A map keyed by a hash already computed: the hash is its own hash.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The index of one table version.
struct Index {
    version: u64,
    /// The table side's rows (after its own steps).
    rows: RecordBatch,
    /// Their keys.
    keys: Vec<ArrayRef>,
    key_types: Vec<DataType>,
    /// Hash of a key → the first row with that hash.
    first: HashMap<u64, u32, std::hash::BuildHasherDefault<Prehashed>>,
    /// Row → next row with the same hash (`u32::MAX`: none).
    next: Vec<u32>,
    /// No two rows share a hash, so a stream row matches at most one (keys that are the
    /// table's primary key, barring hash collisions).
    unique: bool,
    /// Per table column no later step reads: a column of the right type to stand in for
    /// it (row 0 repeated), sliced to each output's length and grown when too short.
    stand_ins: Vec<Option<ArrayRef>>,
}

/// The hash of a text key (one text column: hashed by value, row by row).
fn text_hash(v: &str) -> u64 {
    use std::hash::BuildHasher;
    KEY_HASHES.hash_one(v)
}

/// The hashes of the table's keys, as the probe computes them for the stream's.
fn table_hashes(keys: &[ArrayRef], n: usize) -> Result<Vec<u64>> {
    if let [k] = keys
        && let Some(text) = k.as_string_view_opt()
    {
        return Ok((0..n)
            .map(|i| {
                if text.is_null(i) {
                    0
                } else {
                    text_hash(text.value(i))
                }
            })
            .collect());
    }
    let mut h = vec![0; n];
    create_hashes(keys, &KEY_HASHES, &mut h)?;
    Ok(h)
}

/// Every pair (stream row, table row) of a single text key, in stream order, to `emit`.
/// Consecutive rows with the same short key (a device's sensors one after another) reuse the
/// previous row's matches.
fn probe_text(
    index: &Index,
    s: &arrow::array::StringViewArray,
    t: &arrow::array::StringViewArray,
    mut emit: impl FnMut(u32, u32),
) {
    let (sv, tv) = (s.views(), t.views());
    // the previous row's view and its matches
    let mut prev: Option<u128> = None;
    let mut matches: Vec<u32> = Vec::new();
    for i in 0..s.len() {
        if s.is_null(i) {
            prev = None;
            continue;
        }
        let v = sv[i];
        if prev == Some(v) && (v as u32) <= 12 {
            for &r in &matches {
                emit(i as u32, r);
            }
            continue;
        }
        matches.clear();
        let value = s.value(i);
        let mut r = index.first.get(&text_hash(value)).copied().unwrap_or(NONE);
        while r != NONE {
            let w = tv[r as usize];
            let equal = if (v as u32) <= 12 {
                v == w
            } else {
                t.value(r as usize) == value
            };
            if equal {
                matches.push(r);
                emit(i as u32, r);
            }
            r = index.next[r as usize];
        }
        prev = Some(v);
    }
}

/// Every pair (stream row, table row) of any keys, in stream order, to `emit`.
fn probe_any(index: &Index, keys: &[ArrayRef], mut emit: impl FnMut(u32, u32)) -> Result<()> {
    let n = keys.first().map_or(0, |k| k.len());
    let mut hashes = vec![0; n];
    create_hashes(keys, &KEY_HASHES, &mut hashes)?;
    let equal = keys
        .iter()
        .zip(&index.keys)
        .map(|(s, t)| make_comparator(s.as_ref(), t.as_ref(), SortOptions::default()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let nulls = keys.iter().any(|k| k.null_count() > 0);
    for (i, h) in hashes.iter().enumerate() {
        if nulls && null_key(keys, i) {
            continue;
        }
        let mut r = index.first.get(h).copied().unwrap_or(NONE);
        while r != NONE {
            if equal.iter().all(|eq| eq(i, r as usize).is_eq()) {
                emit(i as u32, r);
            }
            r = index.next[r as usize];
        }
    }
    Ok(())
}

/// Every pair of the stream's `keys` with the index's, to `emit`.
fn probe(index: &Index, keys: &[ArrayRef], emit: impl FnMut(u32, u32)) -> Result<()> {
    match (keys, index.keys.as_slice()) {
        ([s], [t]) if s.as_string_view_opt().is_some() && t.as_string_view_opt().is_some() => {
            probe_text(index, s.as_string_view(), t.as_string_view(), emit);
            Ok(())
        }
        _ => probe_any(index, keys, emit),
    }
}

/// Row `i` of each of `keys` is null in some key.
fn null_key(keys: &[ArrayRef], i: usize) -> bool {
    keys.iter().any(|k| k.is_null(i))
}

/// The join as a step of a chain.
pub struct LookupJoin {
    plan: LookupPlan,
    index: Option<Index>,
    unmatched: u64,
    /// Per table column: some later step reads it or lets it out (else it is not taken).
    carried: Vec<bool>,
}

impl std::fmt::Debug for LookupJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupJoin")
            .field("table", &self.plan.table.name())
            .field("kind", &self.plan.kind)
            .finish()
    }
}

const NONE: u32 = u32::MAX;

impl LookupJoin {
    /// A join as planned.
    pub fn new(plan: LookupPlan) -> Self {
        let plan_width = plan.table_width;
        Self {
            plan,
            index: None,
            unmatched: 0,
            carried: vec![true; plan_width],
        }
    }

    /// Carries only the table columns for whose place in the output `needed` is true; the
    /// others get a stand-in (a later step neither reads them nor lets them out).
    pub fn carry_only(&mut self, needed: impl Fn(usize) -> bool) {
        if matches!(self.plan.kind, LookupKind::Semi | LookupKind::Anti) {
            return;
        }
        let first = if self.plan.stream_first {
            self.plan.schema.fields().len() - self.plan.table_width
        } else {
            0
        };
        self.carried = (0..self.plan.table_width)
            .map(|j| needed(first + j))
            .collect();
    }

    /// One line for `weir check --explain`: the join's kind, its table and its state bound.
    pub fn describe(&self) -> String {
        let t = &self.plan.table;
        let v = t.current();
        format!(
            "{} lookup join with table '{}' on {} key{} (state: the table, {} rows now, at most max_rows = {} / max_bytes = {}; version {} from {}, {})",
            self.plan.kind.name(),
            t.name(),
            self.plan.stream_keys.len(),
            if self.plan.stream_keys.len() == 1 {
                ""
            } else {
                "s"
            },
            v.batch.num_rows(),
            t.limits().max_rows,
            t.limits().max_bytes,
            v.number,
            t.location(),
            match t.reload() {
                Some(d) => format!("looked at every {}", humantime::format_duration(d)),
                None => "read once".to_string(),
            }
        )
    }

    /// Stream rows dropped for want of a match since the last call.
    pub fn take_unmatched(&mut self) -> u64 {
        std::mem::take(&mut self.unmatched)
    }

    /// The expressions evaluated over the stream's rows.
    pub fn stream_exprs(&self) -> impl Iterator<Item = &Arc<dyn PhysicalExpr>> {
        self.plan.stream_keys.iter()
    }

    /// Where stream column `col` is in the output.
    pub fn map(&self, col: usize) -> usize {
        match self.plan.kind {
            LookupKind::Inner | LookupKind::Left if !self.plan.stream_first => {
                self.plan.table_width + col
            }
            _ => col,
        }
    }

    /// True when the join computes with stream column `col`.
    pub fn reads(&self, col: usize) -> bool {
        let in_pair = if self.plan.stream_first {
            col
        } else {
            self.plan.table_width + col
        };
        self.plan.stream_keys.iter().any(|e| expr_reads(e, col))
            || self
                .plan
                .filter
                .as_ref()
                .is_some_and(|f| expr_reads(f, in_pair))
    }

    /// The index of the version in use, built when the version changed.
    fn index(&mut self) -> Result<&Index> {
        let version = self.plan.table.current();
        if self.index.as_ref().map(|i| i.version) != Some(version.number) {
            let mut failed = Vec::new();
            let rows = self
                .plan
                .table_chain
                .apply(version.batch.clone(), &mut failed)?;
            if let Some(f) = failed.first() {
                tracing::warn!(table = %self.plan.table.name(), rows = failed.len(), error = %f.message,
                    "table rows left out of a join: evaluating them failed");
            }
            let n = rows.num_rows();
            let keys = self
                .plan
                .table_keys
                .iter()
                .map(|e| e.evaluate(&rows)?.into_array(n))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let key_types: Vec<DataType> = keys.iter().map(|k| k.data_type().clone()).collect();
            let hashes = table_hashes(&keys, n)?;
            let nulls = keys.iter().any(|k| k.null_count() > 0);
            let mut first: HashMap<u64, u32, _> =
                HashMap::with_capacity_and_hasher(n, Default::default());
            let mut next = vec![NONE; n];
            // backwards, so that walking a hash's rows goes in table order
            for r in (0..n).rev() {
                if nulls && null_key(&keys, r) {
                    continue;
                }
                if let Some(prev) = first.insert(hashes[r], r as u32) {
                    next[r] = prev;
                }
            }
            let stand_ins = vec![None; rows.num_columns()];
            let unique = next.iter().all(|&r| r == NONE);
            self.index = Some(Index {
                version: version.number,
                rows,
                keys,
                key_types,
                first,
                next,
                unique,
                stand_ins,
            });
        }
        Ok(self.index.as_ref().expect("built above"))
    }

    /// The join over one batch of stream rows.
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        self.index()?;
        let index = self.index.as_ref().expect("built by index()");
        let keys = key_columns(batch, &self.plan.stream_keys, &index.key_types)?;
        let n = batch.num_rows();
        if index.unique
            && self.plan.filter.is_none()
            && matches!(self.plan.kind, LookupKind::Inner | LookupKind::Left)
        {
            // at most one table row per stream row: its number, NONE for none
            let mut found = vec![NONE; n];
            probe(index, &keys, |i, r| found[i as usize] = r)?;
            let misses = found.iter().filter(|&&r| r == NONE).count();
            if misses == 0 {
                let build = UInt32Array::from(found);
                let table_cols = self.table_columns(&build)?;
                return self.assemble(batch, table_cols, None, n);
            }
            if self.plan.kind == LookupKind::Left {
                let build: UInt32Array = found.iter().map(|&r| (r != NONE).then_some(r)).collect();
                let table_cols = self.table_columns(&build)?;
                return self.assemble(batch, table_cols, None, n);
            }
            self.unmatched += misses as u64;
            let (p, b): (Vec<u32>, Vec<u32>) = found
                .iter()
                .enumerate()
                .filter(|(_, r)| **r != NONE)
                .map(|(i, &r)| (i as u32, r))
                .unzip();
            let (p, b) = (UInt32Array::from(p), UInt32Array::from(b));
            let table_cols = self.table_columns(&b)?;
            return self.assemble(batch, table_cols, Some(&p), p.len());
        }
        // candidate pairs, in stream order
        let (mut probe_rows, mut build_rows) = (Vec::with_capacity(n), Vec::with_capacity(n));
        probe(index, &keys, |i, r| {
            probe_rows.push(i);
            build_rows.push(r);
        })?;
        let (mut probe, mut build) = (UInt32Array::from(probe_rows), UInt32Array::from(build_rows));
        if let Some(filter) = &self.plan.filter {
            let table_cols = take_all(&index.rows, &build)?;
            let pairs = self.assemble_pairs(batch, table_cols, &index.rows.schema(), &probe)?;
            let mask = filter.evaluate(&pairs)?.into_array(pairs.num_rows())?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Internal("join filter is not boolean".into()))?;
            let keep = match mask.nulls() {
                Some(_) => arrow::compute::prep_null_mask_filter(mask),
                None => mask.clone(),
            };
            probe = downcast_u32(arrow::compute::filter(&probe, &keep)?)?;
            build = downcast_u32(arrow::compute::filter(&build, &keep)?)?;
        }
        let mut matched = vec![false; n];
        for &i in probe.values() {
            matched[i as usize] = true;
        }
        let misses = matched.iter().filter(|m| !**m).count() as u64;
        match self.plan.kind {
            LookupKind::Inner => {
                self.unmatched += misses;
                let table_cols = self.table_columns(&build)?;
                self.assemble(batch, table_cols, Some(&probe), probe.len())
            }
            LookupKind::Left => {
                let mut p = UInt32Builder::with_capacity(n);
                let mut b = UInt32Builder::with_capacity(n);
                let mut at = 0;
                for (i, &m) in matched.iter().enumerate() {
                    if !m {
                        p.append_value(i as u32);
                        b.append_null();
                        continue;
                    }
                    while at < probe.len() && probe.value(at) as usize == i {
                        p.append_value(i as u32);
                        b.append_value(build.value(at));
                        at += 1;
                    }
                }
                let (p, b) = (p.finish(), b.finish());
                let table_cols = self.table_columns(&b)?;
                self.assemble(batch, table_cols, Some(&p), p.len())
            }
            LookupKind::Semi | LookupKind::Anti => {
                let semi = self.plan.kind == LookupKind::Semi;
                if semi {
                    self.unmatched += misses;
                }
                let keep: BooleanArray = matched.iter().map(|&m| Some(m == semi)).collect();
                let kept = filter_record_batch(batch, &keep)?;
                Ok(RecordBatch::try_new_with_options(
                    Arc::clone(&self.plan.schema),
                    kept.columns().to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(kept.num_rows())),
                )?)
            }
        }
    }

    /// The table side of the output: its rows `build` (null: none) of the columns carried,
    /// stand-ins for the others.
    fn table_columns(&mut self, build: &UInt32Array) -> Result<Vec<ArrayRef>> {
        let index = self.index.as_mut().expect("built by index()");
        if self.carried.iter().all(|&c| c) || index.rows.num_rows() == 0 {
            return take_all(&index.rows, build);
        }
        let n = build.len();
        let mut cols = Vec::with_capacity(self.carried.len());
        for (j, &carried) in self.carried.iter().enumerate() {
            let col = index.rows.column(j);
            if carried {
                cols.push(take(col, build, None)?);
                continue;
            }
            let stand_in = &mut index.stand_ins[j];
            if stand_in.as_ref().is_none_or(|a| a.len() < n) {
                let zeros = UInt32Array::from(vec![0; n.max(8192)]);
                *stand_in = Some(take(col, &zeros, None)?);
            }
            cols.push(stand_in.as_ref().expect("set above").slice(0, n));
        }
        Ok(cols)
    }

    /// The join's output: the stream rows `probe` (`None`: every row once, in order) beside
    /// the table side's `table_cols`, `rows` rows.
    fn assemble(
        &self,
        batch: &RecordBatch,
        table_cols: Vec<ArrayRef>,
        probe: Option<&UInt32Array>,
        rows: usize,
    ) -> Result<RecordBatch> {
        let stream_cols = stream_rows(batch, probe)?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.plan.schema),
            self.in_join_order(stream_cols, table_cols),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }

    /// The pairs a join filter is evaluated on: the stream rows `probe` beside `table_cols`,
    /// under a schema of both sides (every field nullable).
    fn assemble_pairs(
        &self,
        batch: &RecordBatch,
        table_cols: Vec<ArrayRef>,
        table_schema: &SchemaRef,
        probe: &UInt32Array,
    ) -> Result<RecordBatch> {
        let nullable = |s: &SchemaRef| -> Vec<arrow::datatypes::Field> {
            s.fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect()
        };
        let fields = self.in_join_order(nullable(&batch.schema()), nullable(table_schema));
        let stream_cols = stream_rows(batch, Some(probe))?;
        Ok(RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(fields)),
            self.in_join_order(stream_cols, table_cols),
            &RecordBatchOptions::new().with_row_count(Some(probe.len())),
        )?)
    }

    /// The stream side's items and the table side's, in the join's column order.
    fn in_join_order<T>(&self, stream: Vec<T>, table: Vec<T>) -> Vec<T> {
        let (mut first, second) = if self.plan.stream_first {
            (stream, table)
        } else {
            (table, stream)
        };
        first.extend(second);
        first
    }
}

/// The stream's rows `probe` (`None`, or every row once in order: the columns as they are).
fn stream_rows(batch: &RecordBatch, probe: Option<&UInt32Array>) -> Result<Vec<ArrayRef>> {
    let identity = probe.is_none_or(|p| {
        p.len() == batch.num_rows() && p.values().iter().enumerate().all(|(i, &r)| r as usize == i)
    });
    match probe {
        Some(p) if !identity => Ok(batch
            .columns()
            .iter()
            .map(|c| take(c, p, None))
            .collect::<std::result::Result<Vec<_>, _>>()?),
        _ => Ok(batch.columns().to_vec()),
    }
}

/// Rows `build` (null: none) of every column of `table`.
fn take_all(table: &RecordBatch, build: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(table
        .columns()
        .iter()
        .map(|c| take(c, build, None))
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

fn downcast_u32(a: ArrayRef) -> Result<UInt32Array> {
    a.as_any()
        .downcast_ref::<UInt32Array>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("expected row numbers".into()))
}
