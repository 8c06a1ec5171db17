//! Filters a source can apply itself: when every pipeline reading a source starts by
//! filtering its rows with a simple predicate on the source's own columns, the source may
//! skip the rows none of them wants (the file source then does not decode the other columns
//! of those rows). The pipelines still apply their filters, so the results are the same.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal, NotExpr,
};

use super::chain::Step;
use super::dataflow::Dataflow;
use super::ids::StreamId;
use super::pipeline::Branch;

/// True when `e` is built only of columns, literals, comparisons, `AND`/`OR`/`NOT`, `IN`,
/// `LIKE` and null tests: deterministic, cheap, and the same wherever it is evaluated.
fn is_simple(e: &Arc<dyn PhysicalExpr>) -> bool {
    let mut simple = true;
    let _ = e.apply(|n| {
        let ok = n.downcast_ref::<Column>().is_some()
            || n.downcast_ref::<Literal>().is_some()
            || n.downcast_ref::<InListExpr>().is_some()
            || n.downcast_ref::<IsNullExpr>().is_some()
            || n.downcast_ref::<IsNotNullExpr>().is_some()
            || n.downcast_ref::<NotExpr>().is_some()
            || n.downcast_ref::<LikeExpr>().is_some()
            || n.downcast_ref::<BinaryExpr>().is_some_and(|b| {
                matches!(
                    b.op(),
                    Operator::Eq
                        | Operator::NotEq
                        | Operator::Lt
                        | Operator::LtEq
                        | Operator::Gt
                        | Operator::GtEq
                        | Operator::IsDistinctFrom
                        | Operator::IsNotDistinctFrom
                        | Operator::And
                        | Operator::Or
                )
            });
        simple &= ok;
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    simple
}

/// `e` with its columns renumbered: column `i` becomes stream column `map[i]`; `None` when it
/// reads a column that is not one of the stream's.
fn onto_stream(e: &Arc<dyn PhysicalExpr>, map: &[Option<usize>]) -> Option<Arc<dyn PhysicalExpr>> {
    let mut unmapped = false;
    let out = Arc::clone(e)
        .transform_up(|n| {
            let Some(c) = n.downcast_ref::<Column>() else {
                return Ok(Transformed::no(n));
            };
            match map.get(c.index()).copied().flatten() {
                Some(s) => Ok(Transformed::yes(Arc::new(Column::new(c.name(), s)) as _)),
                None => {
                    unmapped = true;
                    Ok(Transformed::no(n))
                }
            }
        })
        .ok()?
        .data;
    (!unmapped).then_some(out)
}

impl Branch {
    /// The simple predicate this branch filters the rows of its stream (`width` columns)
    /// with before anything else (in its steps, or in the steps `then` that follow them),
    /// over the stream's columns; `None` when it does not start with one.
    pub fn stream_filter(
        &self,
        width: usize,
        then: Option<&super::chain::Chain>,
    ) -> Option<Arc<dyn PhysicalExpr>> {
        // for each column of the rows as they are at the current step: its stream column
        let mut map: Vec<Option<usize>> = match &self.assign {
            Some(a) => a
                .keep
                .iter()
                .map(|&k| Some(k))
                .chain([None, None]) // window_start, window_end
                .collect(),
            None => (0..width).map(Some).collect(),
        };
        let after = then.map(|c| c.steps()).unwrap_or_default();
        for step in self.chain.steps().iter().chain(after) {
            match step {
                Step::Select(idx) => {
                    map = idx.iter().map(|&i| map.get(i).copied().flatten()).collect();
                }
                Step::Filter(p) if is_simple(p) => return onto_stream(p, &map),
                _ => return None,
            }
        }
        None
    }
}

impl Dataflow {
    /// The rows of source `stream` that some pipeline reading it may want: the `OR` of their
    /// leading filters, when every reader has one (`None`: every row may be wanted).
    pub fn source_filter(&self, stream: StreamId) -> Option<Arc<dyn PhysicalExpr>> {
        let s = &self.streams[stream.index()];
        let width = s.schema.fields().len();
        let mut combined: Option<Arc<dyn PhysicalExpr>> = None;
        for r in &s.readers {
            let pipeline = &self.pipelines[r.pipeline.index()];
            let branch = &pipeline.branches[r.branch];
            // a stateless pipeline of one input keeps its steps after the input's
            let then = (pipeline.window.is_none() && pipeline.branches.len() == 1)
                .then_some(&pipeline.post);
            let p = branch.stream_filter(width, then)?;
            combined = Some(match combined {
                None => p,
                Some(c) => Arc::new(BinaryExpr::new(c, Operator::Or, p)),
            });
        }
        combined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;

    #[test]
    fn columns_map_onto_the_stream_and_complex_predicates_stay() {
        let c = |i: usize| Arc::new(Column::new("c", i)) as Arc<dyn PhysicalExpr>;
        let lit = Arc::new(Literal::new(ScalarValue::from("vib_x"))) as Arc<dyn PhysicalExpr>;
        let eq = Arc::new(BinaryExpr::new(c(1), Operator::Eq, lit)) as Arc<dyn PhysicalExpr>;
        assert!(is_simple(&eq));
        let mapped = onto_stream(&eq, &[Some(5), Some(2)]).unwrap();
        assert_eq!(mapped.to_string(), "c@2 = vib_x");
        assert!(
            onto_stream(&eq, &[Some(5), None]).is_none(),
            "a window column"
        );
        let plus = Arc::new(BinaryExpr::new(c(0), Operator::Plus, c(1))) as Arc<dyn PhysicalExpr>;
        assert!(!is_simple(&plus));
    }
}
