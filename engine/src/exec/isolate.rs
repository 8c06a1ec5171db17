//! Row-level failure isolation: a batch whose evaluation fails is evaluated again in halves,
//! down to single rows, so that only the rows that cannot be evaluated (a division by zero,
//! a text that is no number, a bad regular expression, a value over the size limit) are
//! dropped; every other row of the batch goes on.
//!
//! The functions evaluated this way must leave no trace when they fail (expressions, and the
//! steps and operators whose state changes only after every expression of the batch was
//! evaluated), so that evaluating a part again cannot count a row twice.

use std::sync::Mutex;

use arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};

use crate::dead_letter::{DeadLetterLimits, DeadLetters};
use crate::sync::lock;

/// A row that could not be evaluated.
#[derive(Debug, Clone)]
pub struct RowFailure {
    /// `division_by_zero`, `cast`, `overflow`, `regex`, `value_too_large` or `evaluation`: a
    /// metric label.
    pub reason: &'static str,
    /// What failed, with the expression where it is known.
    pub message: String,
    /// The row as it was handed to the failing step.
    pub row: RecordBatch,
}

/// The file rows that cannot be evaluated are written to (`weir run --dead-letter-rows`).
#[derive(Debug)]
pub struct RowDeadLetters(Mutex<DeadLetters>);

impl RowDeadLetters {
    /// Rows go to `file` (appended to; created with its directory).
    pub fn open(file: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self(Mutex::new(DeadLetters::open(
            file,
            DeadLetterLimits::default(),
        )?)))
    }

    /// Writes a row pipeline `pipeline` could not evaluate: the row as a JSON object.
    pub fn row(&self, pipeline: &str, f: &RowFailure) {
        let mut json = Vec::new();
        let mut w: arrow::json::LineDelimitedWriter<_> = crate::json::writer(&mut json);
        let written = w.write(&f.row).and_then(|()| w.finish());
        if written.is_err() {
            json = format!("{:?}", f.row).into_bytes();
        }
        while json.last() == Some(&b'\n') {
            json.pop();
        }
        let mut d = lock(&self.0);
        d.write(pipeline, "row", f.reason, &f.message, &json, json.len());
        d.flush();
    }
}

/// The reason label of an evaluation error.
pub fn reason(e: &DataFusionError) -> &'static str {
    let m = e.to_string().to_ascii_lowercase();
    if m.contains("divide by zero") || m.contains("division by zero") {
        "division_by_zero"
    } else if m.contains("over the limit") {
        "value_too_large"
    } else if m.contains("overflow") {
        "overflow"
    } else if m.contains("regex") || m.contains("regular expression") {
        "regex"
    } else if m.contains("cast") || m.contains("parse") || m.contains("invalid digit") {
        "cast"
    } else {
        "evaluation"
    }
}

/// `f` over `batch`; when it fails, over its halves, recursively. Returns the results of the
/// parts that succeeded, in row order, and the rows that failed on their own, with the error.
pub fn isolate<T>(
    batch: &RecordBatch,
    f: &mut dyn FnMut(&RecordBatch) -> Result<T>,
) -> (Vec<T>, Vec<RowFailure>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    split(batch, f, &mut done, &mut failed);
    (done, failed)
}

fn split<T>(
    batch: &RecordBatch,
    f: &mut dyn FnMut(&RecordBatch) -> Result<T>,
    done: &mut Vec<T>,
    failed: &mut Vec<RowFailure>,
) {
    match f(batch) {
        Ok(t) => done.push(t),
        Err(e) if batch.num_rows() <= 1 => {
            if batch.num_rows() == 1 {
                failed.push(RowFailure {
                    reason: reason(&e),
                    message: crate::compile::clean_message(&e),
                    row: batch.clone(),
                });
            }
        }
        Err(_) => {
            let half = batch.num_rows() / 2;
            split(&batch.slice(0, half), f, done, failed);
            split(&batch.slice(half, batch.num_rows() - half), f, done, failed);
        }
    }
}

/// The first of `exprs` that fails on `row`, for messages: `` `expr`: error ``.
pub fn culprit<'a>(
    exprs: impl IntoIterator<Item = &'a std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    row: &RecordBatch,
) -> Option<String> {
    exprs.into_iter().find_map(|e| {
        e.evaluate(row)
            .and_then(|v| v.into_array(row.num_rows()))
            .err()
            .map(|err| format!("`{e}`: {}", crate::compile::clean_message(&err)))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;
    use datafusion::common::exec_err;

    use super::*;

    #[test]
    fn only_the_failing_rows_are_set_aside() {
        let values = Int64Array::from_iter_values([4, 0, 2, 0, 0, 8, 1]);
        let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as _)]).unwrap();
        let mut calls = 0;
        let (done, failed) = isolate(&batch, &mut |b: &RecordBatch| {
            calls += 1;
            let v = b.column(0).as_primitive::<Int64Type>();
            if v.values().contains(&0) {
                return exec_err!("Divide by zero error");
            }
            Ok(v.values().iter().map(|x| 8 / x).collect::<Vec<_>>())
        });
        assert_eq!(done.concat(), vec![2, 4, 1, 8]);
        assert_eq!(failed.len(), 3);
        assert!(failed.iter().all(|f| f.reason == "division_by_zero"));
        assert!(failed.iter().all(|f| f.row.num_rows() == 1));
        assert!(calls <= 2 * 7, "{calls} calls");
    }
}
