//! Turns DataFusion's optimized logical plan of a view or insert into streaming operators:
//! stateless steps become physical expressions run on each batch; a `GROUP BY` over a
//! window table function becomes a windowed aggregation of partial state.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::DFSchema;
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, GroupingSet, LogicalPlan, TableScan,
};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;

use super::tables::{StreamTable, as_table};
use crate::exec::chain::{Chain, Step};
use crate::exec::ids::StreamId;
use crate::exec::pipeline::{Branch, StreamJoin, Windowed};
use crate::exec::window::assign::WindowAssign;
use crate::exec::window::partial;
use crate::exec::window::session::SessionAggregate;
use crate::exec::window::state::{AggSpec, GroupSlot, OutputLayout};
use crate::exec::window::tumble_hop::{Assignment, PaneAggregate};
use crate::exec::window::{Panes, WindowKind, WindowOperator};

/// Which part of the statement an error is about (for its line:column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The statement as a whole.
    Statement,
    /// The `GROUP BY` clause.
    GroupBy,
    /// The `FROM` clause.
    From,
    /// The first call of this function.
    Function(String),
}

/// An error found while lowering, with the part of the statement it concerns.
#[derive(Debug, Clone)]
pub struct LowerError {
    /// What is wrong.
    pub message: String,
    /// Where to point.
    pub part: Part,
}

pub(super) type LResult<T> = Result<T, LowerError>;

const GROUP_BY_WINDOW: &str = "GROUP BY over a window must include window_start (and, for SESSION, window_end), e.g. GROUP BY machine, window_start, window_end";

pub(super) fn err<T>(part: Part, message: impl Into<String>) -> LResult<T> {
    Err(LowerError {
        message: message.into(),
        part,
    })
}

pub(super) fn df<T>(r: datafusion::common::Result<T>) -> LResult<T> {
    r.map_err(|e| LowerError {
        message: super::clean_message(&e),
        part: Part::Statement,
    })
}

/// What the lowering needs to know about streams.
pub trait StreamInfo {
    /// Columns of `stream` that carry a watermark.
    fn time_cols(&self, stream: StreamId) -> Vec<usize>;
    /// True when `stream` ends by itself.
    fn is_bounded(&self, stream: StreamId) -> bool;
}

/// A lowered query.
pub struct Lowered {
    /// Inputs.
    pub branches: Vec<Branch>,
    /// Windowed aggregation, if any.
    pub window: Option<Windowed>,
    /// A join of two streams within a time bound, if any.
    pub join: Option<StreamJoin>,
    /// Steps after the aggregation or union.
    pub post: Chain,
    /// Stateless pipelines: output time columns `(pre column, output column)`.
    pub out_time: Vec<(usize, usize)>,
    /// Output columns that carry a watermark (for views read by other views).
    pub time_cols: Vec<usize>,
    /// One line describing the streaming operator, for `--explain`.
    pub description: String,
}

/// A stateless plan node's step.
pub(super) fn step_of(state: &SessionState, node: &LogicalPlan) -> LResult<Option<Step>> {
    Ok(match node {
        LogicalPlan::Filter(f) => Some(Step::Filter(df(
            state.create_physical_expr(f.predicate.clone(), f.input.schema())
        )?)),
        LogicalPlan::Projection(p) => {
            let exprs = p
                .expr
                .iter()
                .map(|e| state.create_physical_expr(e.clone(), p.input.schema()))
                .collect::<datafusion::common::Result<Vec<_>>>();
            Some(Step::Project {
                exprs: df(exprs)?,
                schema: Arc::new(p.schema.as_arrow().clone()),
            })
        }
        LogicalPlan::Window(w) => Some(running_step(state, w)?),
        LogicalPlan::Join(j) => Some(super::join::lookup_step(state, j)?),
        _ => None,
    })
}

/// `interpolate(value, time, max_gap) OVER (PARTITION BY ... ORDER BY ...)` as a step.
fn interpolate_step(
    state: &SessionState,
    w: &datafusion::logical_expr::Window,
    params: &datafusion::logical_expr::expr::WindowFunctionParams,
) -> LResult<Step> {
    let input = w.input.schema();
    let part = || Part::Function("interpolate".into());
    let max_gap = match params.args.get(2) {
        Some(Expr::Literal(v, _)) => weir_udf::interpolate::gap_ns(v),
        _ => None,
    };
    let Some(max_gap) = max_gap else {
        return err(
            part(),
            "interpolate(value, time, max_gap): max_gap must be a constant positive interval, e.g. INTERVAL '10' MINUTE",
        );
    };
    let phys = |e: &Expr| df(state.create_physical_expr(e.clone(), input));
    let time = &params.args[1];
    if !matches!(
        df(time.get_type(input))?,
        arrow::datatypes::DataType::Timestamp(..)
    ) {
        return err(
            part(),
            "interpolate(value, time, max_gap): time must be a TIMESTAMP, e.g. window_end",
        );
    }
    let partition = params
        .partition_by
        .iter()
        .map(phys)
        .collect::<LResult<Vec<_>>>()?;
    let partition_types = params
        .partition_by
        .iter()
        .map(|e| df(e.get_type(input)))
        .collect::<LResult<Vec<_>>>()?;
    let order = match params.order_by.first() {
        Some(o) => Some(phys(&o.expr)?),
        None => None,
    };
    Ok(Step::Interpolate(Box::new(df(
        crate::exec::interpolate::Interpolating::new(
            partition,
            partition_types,
            order,
            phys(&params.args[0])?,
            phys(time)?,
            max_gap,
            Arc::new(w.schema.as_arrow().clone()),
        ),
    )?)))
}

/// `ewma`/`zscore`/`locf` window functions as a step with per-key state.
fn running_step(state: &SessionState, w: &datafusion::logical_expr::Window) -> LResult<Step> {
    use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionDefinition};
    use weir_udf::across_windows::RunningFunction;
    let only = "window functions in a streaming pipeline: only ewma(value, alpha), zscore(value, n), locf(value) and interpolate(value, time, max_gap) OVER (PARTITION BY ... ORDER BY ...) are supported";
    let input = w.input.schema();
    let mut calls = Vec::new();
    let mut shape: Option<(Vec<Expr>, Vec<datafusion::logical_expr::SortExpr>)> = None;
    for e in &w.window_expr {
        let e = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::WindowFunction(wf) = e else {
            return err(Part::Statement, only);
        };
        let WindowFunction { fun, params } = wf.as_ref();
        let WindowFunctionDefinition::WindowUDF(udf) = fun else {
            return err(Part::Statement, format!("{only} (found {})", fun.name()));
        };
        let inner: &dyn std::any::Any = udf.inner().as_ref();
        if inner
            .downcast_ref::<weir_udf::interpolate::Interpolate>()
            .is_some()
        {
            if w.window_expr.len() > 1 {
                return err(
                    Part::Function("interpolate".into()),
                    "interpolate() must be the only window function of its SELECT (compute others in a view it reads)",
                );
            }
            return interpolate_step(state, w, params);
        }
        let Some(f) = inner.downcast_ref::<RunningFunction>() else {
            return err(Part::Statement, format!("{only} (found {})", fun.name()));
        };
        let this = (params.partition_by.clone(), params.order_by.clone());
        if shape.as_ref().is_some_and(|s| *s != this) {
            return err(
                Part::Statement,
                "every ewma/zscore/locf call of one SELECT must use the same PARTITION BY and ORDER BY",
            );
        }
        shape = Some(this);
        let phys = |e: &Expr| df(state.create_physical_expr(e.clone(), input));
        let param = match params.args.get(1) {
            Some(p) => phys(p)?,
            None => phys(&Expr::Literal(
                datafusion::common::ScalarValue::Float64(Some(0.0)),
                None,
            ))?,
        };
        calls.push(crate::exec::running::RunningCall {
            kind: f.kind,
            value: phys(&params.args[0])?,
            param,
        });
    }
    let (partition, order) = shape.unwrap_or_default();
    let partition_types = partition
        .iter()
        .map(|e| e.get_type(input))
        .collect::<datafusion::common::Result<Vec<_>>>();
    let partition = partition
        .iter()
        .map(|e| state.create_physical_expr(e.clone(), input))
        .collect::<datafusion::common::Result<Vec<_>>>();
    let order = match order.first() {
        Some(o) => Some(df(state.create_physical_expr(o.expr.clone(), input))?),
        None => None,
    };
    Ok(Step::Running(Box::new(df(
        crate::exec::running::KeyedRunning::new(
            df(partition)?,
            df(partition_types)?,
            order,
            calls,
            Arc::new(w.schema.as_arrow().clone()),
        ),
    )?)))
}

fn unsupported(node: &LogicalPlan) -> LowerError {
    let (part, message) = match node {
        LogicalPlan::Sort(_) => (Part::Statement, "ORDER BY is not supported in a streaming pipeline: each window's rows are emitted when it closes; sort when you read the results".to_string()),
        LogicalPlan::Limit(_) => (Part::Statement, "LIMIT is not supported in a streaming pipeline (the input never ends)".to_string()),
        LogicalPlan::Aggregate(_) => (Part::From, "an aggregation inside a subquery is not supported; define it as a view (CREATE VIEW ... AS SELECT ...) and read the view".to_string()),
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => (Part::From, "a pipeline must read a source or a view (FROM name or FROM TUMBLE(name, ...))".to_string()),
        other => (Part::Statement, format!("{} is not supported in a streaming pipeline", other.display().to_string().split(':').next().unwrap_or("this"))),
    };
    LowerError { message, part }
}

/// The window table function a branch reads, if any.
#[derive(Debug, Clone, Copy)]
struct BranchWindow {
    /// Event-time column in the stream.
    time_col: usize,
    /// The window.
    kind: WindowKind,
    /// Position of `window_start` in the window table (`window_end` follows).
    start_col: usize,
}

/// The leaf of a branch and its steps.
fn lower_branch(
    state: &SessionState,
    node: &LogicalPlan,
    streams: &dyn StreamInfo,
) -> LResult<(Branch, Option<BranchWindow>)> {
    let mut nodes = Vec::new();
    let mut n = node;
    let scan: &TableScan = loop {
        match n {
            LogicalPlan::Filter(_)
            | LogicalPlan::Projection(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Window(_) => {
                nodes.push(n);
                n = n.inputs()[0];
            }
            LogicalPlan::Join(j) => {
                nodes.push(n);
                n = super::join::stream_input(j)?;
            }
            LogicalPlan::TableScan(s) => break s,
            other => return Err(unsupported(other)),
        }
    };
    if !scan.filters.is_empty() || scan.fetch.is_some() {
        return err(
            Part::From,
            "internal: unexpected pushdown into a stream scan",
        );
    }
    let provider: Arc<dyn TableProvider> = df(source_as_provider(&scan.source))?;
    let mut steps = Vec::new();
    if let Some(p) = &scan.projection {
        steps.push(Step::Select(p.clone()));
    }
    for node in nodes.iter().rev() {
        if let Some(s) = step_of(state, node)? {
            steps.push(s);
        }
    }
    let chain = Chain::new(steps);
    let Some(table) = as_table::<StreamTable>(&provider) else {
        return err(
            Part::From,
            format!("'{}' is not a source or view", scan.table_name),
        );
    };
    if let Some(w) = &table.window {
        let assign = WindowAssign {
            time_col: w.time_col,
            kind: w.kind,
            keep: w.keep.clone(),
            schema: Arc::clone(&table.schema),
        };
        let ws = w.keep.len();
        let time_cols = streams
            .time_cols(table.stream)
            .into_iter()
            .filter_map(|c| w.keep.iter().position(|&k| k == c).map(|kpos| (c, kpos)))
            .filter_map(|(c, kpos)| chain.map_column(kpos).map(|p| (c, p)))
            .collect();
        let branch = Branch {
            stream: table.stream,
            assign: Some(assign),
            chain,
            time_cols,
        };
        Ok((
            branch,
            Some(BranchWindow {
                time_col: w.time_col,
                kind: w.kind,
                start_col: ws,
            }),
        ))
    } else {
        let time_cols = streams
            .time_cols(table.stream)
            .into_iter()
            .filter_map(|c| chain.map_column(c).map(|p| (c, p)))
            .collect();
        Ok((
            Branch {
                stream: table.stream,
                assign: None,
                chain,
                time_cols,
            },
            None,
        ))
    }
}

/// The steps of `nodes` (outermost first), applied innermost first.
fn chain_of(state: &SessionState, nodes: &[&LogicalPlan]) -> LResult<Chain> {
    let mut steps = Vec::new();
    for n in nodes.iter().rev() {
        if let Some(s) = step_of(state, n)? {
            steps.push(s);
        }
    }
    Ok(Chain::new(steps))
}

/// The stream column of branch `b`'s time column `pre`.
fn stream_col_of(b: &Branch, pre: usize) -> usize {
    b.time_cols
        .iter()
        .find(|(_, p)| *p == pre)
        .map(|(c, _)| *c)
        .expect("a time column, checked when planned")
}

/// A join of two streams within a time bound, with the steps `post_nodes` after it.
fn lower_stream_join(
    state: &SessionState,
    j: &datafusion::logical_expr::Join,
    post_nodes: &[&LogicalPlan],
    streams: &dyn StreamInfo,
) -> LResult<Lowered> {
    let post = chain_of(state, post_nodes)?;
    let (left, lw) = lower_branch(state, &j.left, streams)?;
    let (right, rw) = lower_branch(state, &j.right, streams)?;
    if lw.is_some() || rw.is_some() {
        return err(
            Part::From,
            "TUMBLE/HOP/SESSION on a side of a join of two streams is not supported: aggregate each stream in a windowed view and join the views on window_end and their keys (a window join)",
        );
    }
    // per join: the operator, its time columns, and its output time columns with how far
    // behind the join's watermark rows may still come
    let (op, [lt, rt], lags): (Box<dyn crate::exec::interval_join::JoinOperator>, _, _) =
        match super::join::asof_condition(j) {
            Some(condition) => {
                let (plan, cols) = super::join::asof_plan(state, j, condition, [&left, &right])?;
                // left rows leave once the watermark passed their time
                let op = df(crate::exec::asof_join::AsOfJoin::new(plan))?;
                (Box::new(op), cols, [Some(0), None])
            }
            None => {
                let (plan, cols) = super::join::interval_plan(state, j, [&left, &right])?;
                // rows still to come: left times after W - after, right times after W - before
                let lags = [Some(plan.after.max(0)), Some(plan.before.max(0))];
                let op = df(crate::exec::interval_join::IntervalJoin::new(plan))?;
                (Box::new(op), cols, lags)
            }
        };
    let time_col = [stream_col_of(&left, lt), stream_col_of(&right, rt)];
    let width = j.left.schema().fields().len();
    let out_time: Vec<(usize, i64)> = [(lt, lags[0]), (width + rt, lags[1])]
        .into_iter()
        .filter_map(|(pre, lag)| Some((post.map_column(pre)?, lag?)))
        .collect();
    let time_cols = out_time.iter().map(|(o, _)| *o).collect();
    let description = op.description().to_string();
    Ok(Lowered {
        branches: vec![left, right],
        window: None,
        join: Some(StreamJoin {
            op,
            time_col,
            out_time,
        }),
        post,
        out_time: vec![],
        time_cols,
        description,
    })
}

/// A view's `fill_keys`: the reference table column whose keys every window must have.
pub struct FillKeys {
    /// The table.
    pub table: Arc<crate::reference::ReferenceTable>,
    /// The column.
    pub column: usize,
}

/// Lowers the plan of one view or insert (`fill`: the view's `fill_keys`).
pub fn lower(
    state: &SessionState,
    plan: &LogicalPlan,
    streams: &dyn StreamInfo,
    fill: Option<FillKeys>,
) -> LResult<Lowered> {
    let mut lowered = lower_plan(state, plan, streams, fill)?;
    if lowered.branches.iter().any(|b| b.chain.hold() > 0) {
        return err(
            Part::Function("interpolate".into()),
            "interpolate() must be in the outer SELECT of a view or insert (not in a subquery or a UNION input)",
        );
    }
    let joins: Vec<String> = lowered
        .branches
        .iter()
        .flat_map(|b| b.chain.lookups())
        .chain(lowered.post.lookups())
        .map(|l| l.describe())
        .collect();
    for j in joins {
        lowered.description.push_str("; ");
        lowered.description.push_str(&j);
    }
    Ok(lowered)
}

fn lower_plan(
    state: &SessionState,
    plan: &LogicalPlan,
    streams: &dyn StreamInfo,
    fill: Option<FillKeys>,
) -> LResult<Lowered> {
    let mut post_nodes = Vec::new();
    let mut node = plan;
    let aggregate: Option<&Aggregate> = loop {
        match node {
            LogicalPlan::Join(j) if super::join::joins_two_streams(j) => {
                if fill.is_some() {
                    return err(Part::GroupBy, FILL_NEEDS);
                }
                return lower_stream_join(state, j, &post_nodes, streams);
            }
            LogicalPlan::Filter(_)
            | LogicalPlan::Projection(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Window(_) => {
                post_nodes.push(node);
                node = node.inputs()[0];
            }
            LogicalPlan::Join(j) => {
                post_nodes.push(node);
                node = super::join::stream_input(j)?;
            }
            LogicalPlan::Aggregate(a) => break Some(a),
            LogicalPlan::Union(_) | LogicalPlan::TableScan(_) => break None,
            other => return Err(unsupported(other)),
        }
    };
    let post = chain_of(state, &post_nodes)?;
    let input = aggregate.map_or(node, |a| a.input.as_ref());
    let inputs: Vec<&LogicalPlan> = match input {
        LogicalPlan::Union(u) => u.inputs.iter().map(|i| i.as_ref()).collect(),
        other => vec![other],
    };
    let mut branches = Vec::new();
    let mut windows = Vec::new();
    for i in inputs {
        let (b, w) = lower_branch(state, i, streams)?;
        branches.push(b);
        windows.push(w);
    }
    let windowed: Vec<_> = windows.iter().flatten().collect();
    if !windowed.is_empty() && windowed.len() != windows.len() {
        return err(
            Part::From,
            "either every input of a UNION ALL is windowed, or none is",
        );
    }
    if let Some(first) = windowed.first()
        && windowed.iter().any(|w| w.kind != first.kind)
    {
        return err(
            Part::From,
            "every input of a UNION ALL must use the same window",
        );
    }
    let window_kind = windowed.first().map(|w| w.kind);
    match aggregate {
        None if fill.is_some() => err(Part::GroupBy, FILL_NEEDS),
        None => lower_stateless(branches, post, window_kind),
        Some(agg) => lower_aggregate(state, agg, branches, &windows, post, streams, fill),
    }
}

const FILL_NEEDS: &str = "fill_keys needs a windowed aggregation over TUMBLE or HOP with one key besides the window: GROUP BY machine, window_start, window_end";

fn lower_stateless(
    branches: Vec<Branch>,
    post: Chain,
    window_kind: Option<WindowKind>,
) -> LResult<Lowered> {
    if let Some(k @ (WindowKind::Hop { .. } | WindowKind::Session { .. })) = window_kind {
        return err(
            Part::GroupBy,
            format!(
                "{} needs an aggregation: add GROUP BY window_start, window_end (and your keys)",
                k.name()
            ),
        );
    }
    // Pre-aggregate columns that are time columns in every branch.
    let candidates: Vec<usize> = branches[0].time_cols.iter().map(|(_, p)| *p).collect();
    let out_time: Vec<(usize, usize)> = candidates
        .into_iter()
        .filter(|p| {
            branches
                .iter()
                .all(|b| b.time_cols.iter().any(|(_, q)| q == p))
        })
        .filter_map(|p| post.map_column(p).map(|o| (p, o)))
        .collect();
    let time_cols = out_time.iter().map(|(_, o)| *o).collect();
    let description = match window_kind {
        Some(k) => format!(
            "stateless (filter/projection per batch) over {}",
            describe(k)
        ),
        None => "stateless (filter/projection per batch)".to_string(),
    };
    Ok(Lowered {
        branches,
        window: None,
        join: None,
        post,
        out_time,
        time_cols,
        description,
    })
}

/// Human-readable window, e.g. `TUMBLE size 1m`.
fn describe(k: WindowKind) -> String {
    let d = |ns: i64| {
        humantime::format_duration(std::time::Duration::from_nanos(ns as u64)).to_string()
    };
    match k {
        WindowKind::Tumble { size } => format!("TUMBLE size {}", d(size)),
        WindowKind::Hop { slide, size } => format!("HOP slide {} size {}", d(slide), d(size)),
        WindowKind::Session { gap } => format!("SESSION gap {}", d(gap)),
    }
}

/// The non-window `GROUP BY` keys and where each group expression goes in the output.
struct GroupKeys {
    slots: Vec<GroupSlot>,
    exprs: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    schema: SchemaRef,
}

fn refuse_grouping_sets(agg: &Aggregate) -> LResult<()> {
    let grouping_set = agg.group_expr.iter().any(|e| {
        matches!(
            e,
            Expr::GroupingSet(
                GroupingSet::Rollup(_) | GroupingSet::Cube(_) | GroupingSet::GroupingSets(_)
            )
        )
    });
    if grouping_set {
        return err(
            Part::GroupBy,
            "ROLLUP, CUBE and GROUPING SETS are not supported in a streaming pipeline",
        );
    }
    Ok(())
}

/// Pre-aggregate positions of `window_start` and `window_end` (the same in every branch),
/// when the branches read a window table function.
fn window_columns(
    branches: &[Branch],
    window: Option<BranchWindow>,
) -> LResult<Option<(usize, Option<usize>)>> {
    let Some(BranchWindow {
        kind,
        start_col: ws,
        ..
    }) = window
    else {
        return Ok(None);
    };
    let mut window_cols: Option<(usize, Option<usize>)> = None;
    for b in branches {
        // window_end may be gone when only window_start is grouped by (TUMBLE and HOP)
        let (Some(s), e) = (b.chain.map_column(ws), b.chain.map_column(ws + 1)) else {
            return err(Part::GroupBy, GROUP_BY_WINDOW);
        };
        if window_cols.is_some_and(|w| w != (s, e)) {
            return err(
                Part::From,
                "window_start and window_end must be in the same position in every input of a UNION ALL",
            );
        }
        if !matches!(kind, WindowKind::Tumble { .. })
            && (b.chain.computes_with(ws) || b.chain.computes_with(ws + 1))
        {
            return err(
                Part::Statement,
                format!(
                    "with {} windows, window_start and window_end are known only after aggregation: use them in the SELECT list or after GROUP BY, not in WHERE or inside expressions before it",
                    kind.name()
                ),
            );
        }
        window_cols = Some((s, e));
    }
    Ok(window_cols)
}

/// Sorts the group expressions into the window bounds and the keys, planning the keys.
fn group_keys(
    state: &SessionState,
    agg: &Aggregate,
    window_cols: Option<(usize, Option<usize>)>,
) -> LResult<GroupKeys> {
    let input_schema: &DFSchema = agg.input.schema();
    let mut slots = Vec::new();
    let mut exprs = Vec::new();
    let mut fields = Vec::new();
    for e in &agg.group_expr {
        let col_idx = match e {
            Expr::Column(c) => input_schema.index_of_column(c).ok(),
            _ => None,
        };
        match (window_cols, col_idx) {
            (Some((s, _)), Some(i)) if i == s => slots.push(GroupSlot::WindowStart),
            (Some((_, Some(en))), Some(i)) if i == en => slots.push(GroupSlot::WindowEnd),
            _ => {
                let phys = df(state.create_physical_expr(e.clone(), input_schema))?;
                let dt = df(phys.data_type(input_schema.as_arrow()))?;
                fields.push(Field::new(format!("k{}", exprs.len()), dt, true));
                slots.push(GroupSlot::Key(exprs.len()));
                exprs.push(phys);
            }
        }
    }
    Ok(GroupKeys {
        slots,
        exprs,
        schema: Arc::new(Schema::new(fields)),
    })
}

/// DataFusion's aggregate expressions, with their arguments, ordering and filter.
fn aggregates(state: &SessionState, agg: &Aggregate) -> LResult<Vec<AggSpec>> {
    let input_schema: &DFSchema = agg.input.schema();
    agg.aggr_expr
        .iter()
        .map(|e| {
            let planning = PhysicalPlanningContext::default();
            let e = partial::with_marker_argument(e);
            let lowered = df(LoweredAggregateBuilder::new(
                &e,
                input_schema,
                input_schema.as_arrow(),
                state.execution_props(),
                &planning,
            )
            .build())?;
            let expr = lowered.aggregate;
            // an aggregate whose constant arguments can never work refuses to start
            if let Err(e) = expr.create_accumulator() {
                return err(
                    Part::Function(expr.fun().name().to_string()),
                    format!("{}: {}", expr.fun().name(), super::clean_message(&e)),
                );
            }
            let mut args = expr.expressions();
            args.extend(lowered.order_bys.iter().map(|o| Arc::clone(&o.expr)));
            Ok(AggSpec {
                expr,
                args,
                filter: lowered.filter,
            })
        })
        .collect()
}

/// The operator for the window the branches read (or one window over the whole input of
/// finite sources), with its description.
fn window_operator(
    kind: Option<WindowKind>,
    window_cols: Option<(usize, Option<usize>)>,
    keys: GroupKeys,
    aggs: Vec<AggSpec>,
    layout: OutputLayout,
) -> LResult<(Box<dyn WindowOperator>, String)> {
    let (kind, start) = match (kind, window_cols) {
        (Some(k), Some((s, _))) => (k, s),
        _ => {
            let op = PaneAggregate::new(Assignment::Whole, keys.exprs, keys.schema, aggs, layout);
            return Ok((
                Box::new(op),
                "whole input (finite sources), emitted at end".to_string(),
            ));
        }
    };
    // a tumbling or hopping window's end follows from its start; a session's does not
    let needs_end = matches!(kind, WindowKind::Session { .. });
    if !keys.slots.contains(&GroupSlot::WindowStart)
        || needs_end && !keys.slots.contains(&GroupSlot::WindowEnd)
    {
        return err(Part::GroupBy, GROUP_BY_WINDOW);
    }
    let panes = |size, slide| Assignment::Panes {
        panes: Panes::new(size, slide),
        col: start,
    };
    let op: Box<dyn WindowOperator> = match kind {
        WindowKind::Tumble { size } => Box::new(PaneAggregate::new(
            panes(size, size),
            keys.exprs,
            keys.schema,
            aggs,
            layout,
        )),
        WindowKind::Hop { slide, size } => Box::new(PaneAggregate::new(
            panes(size, slide),
            keys.exprs,
            keys.schema,
            aggs,
            layout,
        )),
        WindowKind::Session { gap } => Box::new(df(SessionAggregate::new(
            gap,
            start,
            keys.exprs,
            keys.schema,
            aggs,
            layout,
        ))?),
    };
    Ok((op, describe(kind)))
}

/// Gap filling of a windowed aggregation with the keys of a table column.
fn gap_fill(
    f: FillKeys,
    kind: Option<WindowKind>,
    keys: &GroupKeys,
    aggs: &[AggSpec],
    layout: &OutputLayout,
) -> LResult<crate::exec::window::fill::GapFill> {
    let (size, slide) = match kind {
        Some(WindowKind::Tumble { size }) => (size, size),
        Some(WindowKind::Hop { slide, size }) => (size, slide),
        _ => return err(Part::GroupBy, FILL_NEEDS),
    };
    if keys.exprs.len() != 1 {
        return err(Part::GroupBy, FILL_NEEDS);
    }
    let key_type = keys.schema.field(0).data_type().clone();
    let table_type = f.table.schema().field(f.column).data_type();
    if !arrow::compute::can_cast_types(table_type, &key_type) {
        return err(
            Part::GroupBy,
            format!("fill_keys: the table column is {table_type}, the GROUP BY key is {key_type}"),
        );
    }
    let empties = aggs
        .iter()
        .map(|a| {
            df(a.expr
                .create_accumulator()
                .and_then(|mut acc| acc.evaluate()))
        })
        .collect::<LResult<Vec<_>>>()?;
    Ok(crate::exec::window::fill::GapFill::new(
        f.table,
        f.column,
        key_type,
        layout.clone(),
        empties,
        size,
        slide,
    ))
}

fn lower_aggregate(
    state: &SessionState,
    agg: &Aggregate,
    branches: Vec<Branch>,
    windows: &[Option<BranchWindow>],
    post: Chain,
    streams: &dyn StreamInfo,
    fill: Option<FillKeys>,
) -> LResult<Lowered> {
    refuse_grouping_sets(agg)?;
    let window_cols = window_columns(&branches, windows[0])?;
    let keys = group_keys(state, agg, window_cols)?;
    let aggs = aggregates(state, agg)?;
    let kind = windows[0].map(|w| w.kind);
    if kind.is_none() && branches.iter().any(|b| !streams.is_bounded(b.stream)) {
        return err(
            Part::GroupBy,
            "GROUP BY without a window over an unbounded source never finishes, so it would never emit a result. Aggregate over a window instead: FROM TUMBLE(source, ts, INTERVAL '1' MINUTE) ... GROUP BY window_start, window_end, <keys> (or HOP/SESSION)",
        );
    }
    let slots = keys.slots.clone();
    let slot_out = |want: GroupSlot| {
        slots
            .iter()
            .position(|s| *s == want)
            .and_then(|i| post.map_column(i))
    };
    let aggregate_names: Vec<String> = agg
        .aggr_expr
        .iter()
        .map(|e| e.schema_name().to_string())
        .collect();
    let key_names: Vec<String> = agg
        .group_expr
        .iter()
        .zip(&slots)
        .filter(|(_, s)| matches!(s, GroupSlot::Key(_)))
        .map(|(e, _)| e.schema_name().to_string())
        .collect();
    let layout = OutputLayout {
        slots: slots.clone(),
        schema: Arc::new(agg.schema.as_arrow().clone()),
        partial: aggs
            .iter()
            .position(|a| a.expr.fun().name() == partial::WINDOW_PARTIAL),
    };
    let fill = match fill {
        None => None,
        Some(f) => Some(gap_fill(f, kind, &keys, &aggs, &layout)?),
    };
    let (op, window) = window_operator(kind, window_cols, keys, aggs, layout)?;
    let (out_start, out_end, time_col) = match kind {
        Some(_) => (
            slot_out(GroupSlot::WindowStart),
            slot_out(GroupSlot::WindowEnd),
            windows.iter().flatten().map(|w| w.time_col).collect(),
        ),
        None => (None, None, vec![0; branches.len()]),
    };
    let mut description = format!(
        "windowed aggregation: {window}; keys [{}]; aggregates [{}]",
        key_names.join(", "),
        aggregate_names.join(", ")
    );
    if let Some(f) = &fill {
        description.push_str("; ");
        description.push_str(&f.describe());
    }
    let time_cols = out_start.iter().chain(out_end.iter()).copied().collect();
    let out_keys = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, GroupSlot::Key(_)))
        .filter_map(|(i, _)| post.map_column(i))
        .collect();
    Ok(Lowered {
        branches,
        window: Some(Windowed {
            op,
            out_start,
            out_end,
            out_keys,
            time_col,
            fill,
        }),
        join: None,
        post,
        out_time: vec![],
        time_cols,
        description,
    })
}
