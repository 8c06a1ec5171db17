//! The latest closed window of every group key of a windowed pipeline, updated row by row
//! and bounded in keys and age.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::TimestampNanosecondType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

/// How many keys a latest table keeps and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatestBounds {
    /// Keys kept; past it the key updated longest ago is evicted.
    pub max_keys: usize,
    /// A key not updated for this long is evicted (None: kept until evicted by count).
    pub max_age: Option<Duration>,
}

/// Keys evicted by one call, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Evicted because the table held `max_keys` keys.
    pub keys: u64,
    /// Evicted because they were not updated for `max_age`.
    pub age: u64,
}

/// Keeps, per group key, the row of the most recent window (by `window_end` when the
/// pipeline outputs it, else by arrival). An update costs the rows it brings, not the keys
/// kept: rows stay in the batches they came in until compacted.
#[derive(Debug)]
pub struct LatestByKey {
    keys: Vec<usize>,
    end: Option<usize>,
    converter: Option<RowConverter>,
    bounds: LatestBounds,
    /// The batches rows are kept in, by id, with the number of keys each still holds.
    chunks: BTreeMap<u64, Chunk>,
    next_chunk: u64,
    /// Rows in `chunks`, current or not.
    chunk_rows: usize,
    entries: BTreeMap<Box<[u8]>, Entry>,
    /// Keys by update order (oldest first), with when they were updated.
    by_update: BTreeMap<u64, (Box<[u8]>, Instant)>,
    next_update: u64,
}

#[derive(Debug)]
struct Chunk {
    batch: RecordBatch,
    current: usize,
}

/// Where a key's row is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    chunk: u64,
    row: usize,
    end: Option<i64>,
    update: u64,
}

impl LatestByKey {
    /// Rows keyed by the output columns `keys`, ordered in time by the timestamp column `end`.
    pub fn new(
        schema: &arrow::datatypes::Schema,
        keys: Vec<usize>,
        end: Option<usize>,
        bounds: LatestBounds,
    ) -> Result<Self, ArrowError> {
        let converter = if keys.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                keys.iter()
                    .map(|&k| SortField::new(schema.field(k).data_type().clone()))
                    .collect(),
            )?)
        };
        Ok(Self {
            keys,
            end,
            converter,
            bounds: LatestBounds {
                max_keys: bounds.max_keys.max(1),
                ..bounds
            },
            chunks: BTreeMap::new(),
            next_chunk: 0,
            chunk_rows: 0,
            entries: BTreeMap::new(),
            by_update: BTreeMap::new(),
            next_update: 0,
        })
    }

    /// Takes the rows of newly emitted windows at `now`; returns the keys evicted to stay
    /// within `max_keys`.
    pub fn update(&mut self, batch: &RecordBatch, now: Instant) -> Result<Evicted, ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(Evicted::default());
        }
        let keys = self.row_keys(batch)?;
        let ends = self.end.and_then(|c| {
            batch
                .column(c)
                .as_primitive_opt::<TimestampNanosecondType>()
        });
        let chunk = self.next_chunk;
        self.next_chunk += 1;
        self.chunks.insert(
            chunk,
            Chunk {
                batch: batch.clone(),
                current: 0,
            },
        );
        self.chunk_rows += batch.num_rows();
        for (row, key) in keys.into_iter().enumerate() {
            let end = ends.and_then(|e| e.is_valid(row).then(|| e.value(row)));
            let old = self.entries.get(&key).copied();
            if let Some(old) = old {
                if old.end > end {
                    continue;
                }
                self.by_update.remove(&old.update);
            }
            let update = self.next_update;
            self.next_update += 1;
            self.by_update.insert(update, (key.clone(), now));
            self.entries.insert(
                key,
                Entry {
                    chunk,
                    row,
                    end,
                    update,
                },
            );
            if let Some(c) = self.chunks.get_mut(&chunk) {
                c.current += 1;
            }
            // after counting the new row: the old one may be in this batch too
            if let Some(old) = old {
                self.release(old.chunk);
            }
        }
        if self.chunks.get(&chunk).is_some_and(|c| c.current == 0) {
            self.drop_chunk(chunk);
        }
        let mut evicted = Evicted::default();
        while self.entries.len() > self.bounds.max_keys {
            self.evict_oldest();
            evicted.keys += 1;
        }
        self.compact_if_sparse()?;
        Ok(evicted)
    }

    /// Evicts the keys not updated for `max_age` at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> Result<Evicted, ArrowError> {
        let mut evicted = Evicted::default();
        if let Some(age) = self.bounds.max_age {
            while self
                .by_update
                .first_key_value()
                .is_some_and(|(_, (_, at))| now.saturating_duration_since(*at) > age)
            {
                self.evict_oldest();
                evicted.age += 1;
            }
            if evicted.age > 0 {
                self.compact_if_sparse()?;
            }
        }
        Ok(evicted)
    }

    /// Keys kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// One row per key, in key order (None when no key is kept).
    pub fn batch(&self) -> Result<Option<RecordBatch>, ArrowError> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        self.gather().map(Some)
    }

    fn gather(&self) -> Result<RecordBatch, ArrowError> {
        let position: BTreeMap<u64, usize> = self
            .chunks
            .keys()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let batches: Vec<&RecordBatch> = self.chunks.values().map(|c| &c.batch).collect();
        let indices: Vec<(usize, usize)> = self
            .entries
            .values()
            .map(|e| (position[&e.chunk], e.row))
            .collect();
        interleave_record_batch(&batches, &indices)
    }

    /// Rewrites the current rows into one batch once most kept rows are stale, so that
    /// memory stays a small multiple of the keys kept (amortised: a compaction copies the
    /// current rows after at least as many updates).
    fn compact_if_sparse(&mut self) -> Result<(), ArrowError> {
        if self.chunk_rows <= 2 * self.entries.len() + 1024 {
            return Ok(());
        }
        let batch = self.gather()?;
        let chunk = self.next_chunk;
        self.next_chunk += 1;
        for (row, e) in self.entries.values_mut().enumerate() {
            e.chunk = chunk;
            e.row = row;
        }
        self.chunk_rows = batch.num_rows();
        self.chunks.clear();
        self.chunks.insert(
            chunk,
            Chunk {
                current: batch.num_rows(),
                batch,
            },
        );
        Ok(())
    }

    fn evict_oldest(&mut self) {
        if let Some((_, (key, _))) = self.by_update.pop_first()
            && let Some(e) = self.entries.remove(&key)
        {
            self.release(e.chunk);
        }
    }

    /// One key less refers to `chunk`.
    fn release(&mut self, chunk: u64) {
        let empty = self.chunks.get_mut(&chunk).is_some_and(|c| {
            c.current -= 1;
            c.current == 0
        });
        if empty {
            self.drop_chunk(chunk);
        }
    }

    fn drop_chunk(&mut self, chunk: u64) {
        if let Some(c) = self.chunks.remove(&chunk) {
            self.chunk_rows -= c.batch.num_rows();
        }
    }

    fn row_keys(&self, b: &RecordBatch) -> Result<Vec<Box<[u8]>>, ArrowError> {
        let Some(conv) = &self.converter else {
            return Ok(vec![Box::from([] as [u8; 0]); b.num_rows()]);
        };
        let cols: Vec<_> = self.keys.iter().map(|&k| b.column(k).clone()).collect();
        let rows = conv.convert_columns(&cols)?;
        Ok(rows.iter().map(|r| Box::from(r.as_ref())).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};

    use super::*;

    const UNBOUNDED: LatestBounds = LatestBounds {
        max_keys: usize::MAX,
        max_age: None,
    };

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new("machine", DataType::Utf8, true),
            Field::new("avg", DataType::Float64, true),
        ]))
    }

    fn batch(rows: &[(i64, Option<&str>, f64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn rows(l: &LatestByKey) -> Vec<(Option<String>, f64)> {
        let Some(b) = l.batch().unwrap() else {
            return vec![];
        };
        let m = b.column(1).as_string::<i32>();
        let v = b.column(2).as_primitive::<Float64Type>();
        (0..b.num_rows())
            .map(|i| (m.is_valid(i).then(|| m.value(i).to_string()), v.value(i)))
            .collect()
    }

    fn some(rows: &[(&str, f64)]) -> Vec<(Option<String>, f64)> {
        rows.iter()
            .map(|(k, v)| (Some(k.to_string()), *v))
            .collect()
    }

    #[test]
    fn keeps_the_newest_window_per_key() {
        let now = Instant::now();
        let mut l = LatestByKey::new(&schema(), vec![1], Some(0), UNBOUNDED).unwrap();
        l.update(&batch(&[(10, Some("b"), 1.0), (10, Some("a"), 2.0)]), now)
            .unwrap();
        // a late-emitted older window does not replace a newer one; a null key is a key
        // (ordered first); a key twice in one batch keeps its later row
        l.update(
            &batch(&[
                (20, Some("a"), 3.0),
                (5, Some("b"), 9.0),
                (20, None, 4.0),
                (20, Some("a"), 5.0),
            ]),
            now,
        )
        .unwrap();
        let mut expected = vec![(None, 4.0)];
        expected.extend(some(&[("a", 5.0), ("b", 1.0)]));
        assert_eq!(rows(&l), expected);
    }

    #[test]
    fn without_keys_keeps_one_row() {
        let now = Instant::now();
        let mut l = LatestByKey::new(&schema(), vec![], Some(0), UNBOUNDED).unwrap();
        l.update(&batch(&[(30, Some("x"), 1.0), (40, Some("y"), 2.0)]), now)
            .unwrap();
        l.update(&batch(&[(35, Some("z"), 3.0)]), now).unwrap();
        assert_eq!(rows(&l), some(&[("y", 2.0)]));
    }

    #[test]
    fn evicts_the_key_updated_longest_ago() {
        let now = Instant::now();
        let bounds = LatestBounds {
            max_keys: 2,
            max_age: None,
        };
        let mut l = LatestByKey::new(&schema(), vec![1], Some(0), bounds).unwrap();
        l.update(&batch(&[(10, Some("a"), 1.0), (10, Some("b"), 2.0)]), now)
            .unwrap();
        l.update(&batch(&[(20, Some("a"), 3.0)]), now).unwrap();
        // b was updated longest ago, though a is the smaller key and was seen first
        let evicted = l.update(&batch(&[(20, Some("c"), 4.0)]), now).unwrap();
        assert_eq!(evicted, Evicted { keys: 1, age: 0 });
        assert_eq!(rows(&l), some(&[("a", 3.0), ("c", 4.0)]));
        // an older window of a kept key does not refresh it
        l.update(&batch(&[(5, Some("a"), 9.0)]), now).unwrap();
        l.update(&batch(&[(30, Some("d"), 5.0)]), now).unwrap();
        assert_eq!(rows(&l), some(&[("c", 4.0), ("d", 5.0)]));
    }

    #[test]
    fn expires_keys_not_updated_for_the_age() {
        let t0 = Instant::now();
        let bounds = LatestBounds {
            max_keys: 100,
            max_age: Some(Duration::from_secs(10)),
        };
        let mut l = LatestByKey::new(&schema(), vec![1], Some(0), bounds).unwrap();
        l.update(&batch(&[(10, Some("a"), 1.0), (10, Some("b"), 2.0)]), t0)
            .unwrap();
        l.update(&batch(&[(20, Some("b"), 3.0)]), t0 + Duration::from_secs(5))
            .unwrap();
        let none = l.expire(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(none, Evicted::default());
        let evicted = l.expire(t0 + Duration::from_secs(12)).unwrap();
        assert_eq!(evicted, Evicted { keys: 0, age: 1 });
        assert_eq!(rows(&l), some(&[("b", 3.0)]));
        l.expire(t0 + Duration::from_secs(16)).unwrap();
        assert_eq!(l.len(), 0);
        assert!(l.batch().unwrap().is_none());
    }

    #[test]
    fn memory_follows_the_keys_not_the_updates() {
        // churning keys over a fixed bound, and a few hot keys updated in every batch
        let now = Instant::now();
        let bounds = LatestBounds {
            max_keys: 50,
            max_age: None,
        };
        let mut l = LatestByKey::new(&schema(), vec![1], Some(0), bounds).unwrap();
        let mut expected: HashMap<String, (u64, f64)> = HashMap::new();
        let mut evicted = 0;
        let mut update = 0u64;
        for i in 0..2_000i64 {
            let names = [
                format!("hot{}", i % 3),
                format!("k{i}"),
                format!("k{}", i / 2),
            ];
            let rows: Vec<(i64, Option<&str>, f64)> = names
                .iter()
                .enumerate()
                .map(|(j, n)| (i, Some(n.as_str()), (i * 10 + j as i64) as f64))
                .collect();
            evicted += l.update(&batch(&rows), now).unwrap().keys;
            for (_, n, v) in &rows {
                update += 1;
                expected.insert(n.unwrap().to_string(), (update, *v));
            }
            assert!(l.chunk_rows <= 2 * 50 + 1024 + 3, "{}", l.chunk_rows);
        }
        // the 50 keys updated last, computed independently
        let mut newest: Vec<(String, (u64, f64))> = expected.into_iter().collect();
        newest.sort_by_key(|(_, (u, _))| std::cmp::Reverse(*u));
        newest.truncate(50);
        let mut want: Vec<(Option<String>, f64)> =
            newest.into_iter().map(|(k, (_, v))| (Some(k), v)).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(rows(&l), want);
        assert_eq!(l.len(), 50);
        assert!(evicted > 1_000, "{evicted}");
    }
}
