//! Joins in a streaming pipeline: a stream joined with a reference table becomes a lookup
//! step; joins of two streams are refused (they need a time bound) with what to write
//! instead.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::{JoinType, NullEquality, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, ExprSchemable, Join, LogicalPlan, Operator};
use datafusion::sql::sqlparser::ast;

use super::lower::{LResult, Part, df, err, step_of};
use super::tables::as_table;
use crate::exec::asof_join::AsOfPlan;
use crate::exec::chain::{Chain, Step};
use crate::exec::interval_join::IntervalPlan;
use crate::exec::lookup::{LookupJoin, LookupKind, LookupPlan};
use crate::exec::pipeline::Branch;
use crate::reference::{ReferenceProvider, ReferenceTable};

/// The reference table a join input reads through filters and projections only, with those
/// nodes (outermost first).
fn table_input(plan: &LogicalPlan) -> Option<(Arc<ReferenceTable>, Vec<&LogicalPlan>)> {
    let mut nodes = Vec::new();
    let mut n = plan;
    loop {
        match n {
            LogicalPlan::Filter(_) | LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => {
                nodes.push(n);
                n = n.inputs()[0];
            }
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source).ok()?;
                let table = as_table::<ReferenceProvider>(&provider)?;
                return Some((Arc::clone(&table.table), {
                    nodes.push(n);
                    nodes
                }));
            }
            _ => return None,
        }
    }
}

/// True when `plan` reads a reference table somewhere.
fn reads_a_table(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)
            .ok()
            .is_some_and(|p| as_table::<ReferenceProvider>(&p).is_some()),
        other => other.inputs().iter().any(|i| reads_a_table(i)),
    }
}

/// Which input of `j` is the stream (the other is a reference table).
pub(super) fn stream_input(j: &Join) -> LResult<&LogicalPlan> {
    let left = table_input(&j.left).is_some();
    let right = table_input(&j.right).is_some();
    match (left, right) {
        (false, true) => Ok(&j.left),
        (true, false) => Ok(&j.right),
        (true, true) => err(
            Part::From,
            "a join of two reference tables is not supported: join a stream with each of them",
        ),
        (false, false) if reads_a_table(&j.left) || reads_a_table(&j.right) => err(
            Part::From,
            "the reference-table side of a join may only filter and select columns of the table (no aggregation, union or join inside it)",
        ),
        (false, false) => err(
            Part::From,
            "a join of two streams must be the whole query of a view or insert (only filters and projections above it): aggregate its rows in another view, e.g. FROM TUMBLE(joined_view, ts, INTERVAL '1' MINUTE)",
        ),
    }
}

/// The join of a stream with a reference table as a lookup step.
pub(super) fn lookup_step(state: &SessionState, j: &Join) -> LResult<Step> {
    let stream_first = table_input(&j.right).is_some();
    let (table_plan, stream_plan) = if stream_first {
        (&j.right, &j.left)
    } else {
        (&j.left, &j.right)
    };
    let (table, nodes) = table_input(table_plan).expect("checked by stream_input");
    let kind = match (j.join_type, stream_first) {
        (JoinType::Inner, _) => LookupKind::Inner,
        (JoinType::Left, true) | (JoinType::Right, false) => LookupKind::Left,
        (JoinType::LeftSemi, true) | (JoinType::RightSemi, false) => LookupKind::Semi,
        (JoinType::LeftAnti, true) | (JoinType::RightAnti, false) => LookupKind::Anti,
        (JoinType::Full | JoinType::Left | JoinType::Right, _) => {
            return err(
                Part::From,
                format!(
                    "a {} JOIN that keeps table rows without a matching stream row is not supported (the stream never ends, so such rows are never final): write FROM stream LEFT JOIN {} ON ... to keep every stream row",
                    if j.join_type == JoinType::Full {
                        "FULL"
                    } else {
                        "RIGHT or LEFT"
                    },
                    table.name()
                ),
            );
        }
        (other, _) => {
            return err(
                Part::From,
                format!("this kind of join ({other}) with a reference table is not supported"),
            );
        }
    };
    if asof_condition(j).is_some() {
        return err(
            Part::From,
            format!(
                "ASOF JOIN joins two streams; '{}' is a reference table: join it with JOIN ... ON",
                table.name()
            ),
        );
    }
    if j.on.is_empty() {
        return err(
            Part::From,
            format!(
                "a join with reference table '{}' needs an equality on its key, e.g. ON t.machine = {}.machine (other conditions may follow with AND)",
                table.name(),
                table.name()
            ),
        );
    }
    if j.null_equality == NullEquality::NullEqualsNull {
        return err(
            Part::From,
            "IS NOT DISTINCT FROM in a join with a reference table is not supported: use =",
        );
    }
    if j.null_aware {
        return err(
            Part::From,
            "NOT IN (SELECT ... FROM table) is not supported: write NOT EXISTS (SELECT 1 FROM table WHERE table.key = stream.key)",
        );
    }
    // the table side's own steps: its projection, then its filters and projections
    let mut steps = Vec::new();
    for node in nodes.iter().rev() {
        match node {
            LogicalPlan::TableScan(scan) => {
                if let Some(p) = &scan.projection {
                    steps.push(Step::Select(p.clone()));
                }
            }
            other => steps.extend(step_of(state, other)?),
        }
    }
    let (stream_keys, table_keys): (Vec<_>, Vec<_>) =
        j.on.iter()
            .map(|(l, r)| if stream_first { (l, r) } else { (r, l) })
            .unzip();
    let physical = |exprs: Vec<&Expr>, plan: &LogicalPlan| {
        exprs
            .into_iter()
            .map(|e| df(state.create_physical_expr(e.clone(), plan.schema())))
            .collect::<LResult<Vec<_>>>()
    };
    let stream_keys = physical(stream_keys, stream_plan)?;
    let table_keys = physical(table_keys, table_plan)?;
    let filter = match &j.filter {
        None => None,
        Some(f) => {
            let both = df(j.left.schema().join(j.right.schema()))?;
            Some(df(state.create_physical_expr(f.clone(), &both))?)
        }
    };
    Ok(Step::Lookup(Box::new(LookupJoin::new(LookupPlan {
        table,
        table_chain: Chain::new(steps),
        stream_keys,
        table_keys,
        filter,
        kind,
        stream_first,
        table_width: table_plan.schema().fields().len(),
        schema: Arc::new(j.schema.as_arrow().clone()),
    }))))
}

/// True when both inputs of `j` are streams (neither reads a reference table).
pub(super) fn joins_two_streams(j: &Join) -> bool {
    !reads_a_table(&j.left) && !reads_a_table(&j.right)
}

/// `column ± interval`: the column's side (0 left, 1 right), its index there, and the offset.
fn time_term(e: &Expr, j: &Join) -> Option<(usize, usize, i64)> {
    match e {
        Expr::Column(c) => {
            if let Ok(i) = j.left.schema().index_of_column(c) {
                Some((0, i, 0))
            } else {
                j.right.schema().index_of_column(c).ok().map(|i| (1, i, 0))
            }
        }
        Expr::BinaryExpr(b) if matches!(b.op, Operator::Plus | Operator::Minus) => {
            let (side, col, off) = time_term(&b.left, j)?;
            let d = interval_ns(&b.right)?;
            let d = if b.op == Operator::Minus { -d } else { d };
            Some((side, col, off.checked_add(d)?))
        }
        Expr::Cast(c) => time_term(&c.expr, j),
        _ => None,
    }
}

/// An interval or duration literal in nanoseconds (months are not a fixed time).
fn interval_ns(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => weir_udf::interpolate::interval_ns(v),
        _ => None,
    }
}

/// The least and greatest `right.time - left.time` found for one pair of time columns.
type Bound = ((usize, usize), Option<i64>, Option<i64>);

/// Bounds on `right.time - left.time` found in the join condition, per pair of time columns.
#[derive(Default)]
struct Bounds {
    /// `(left column, right column)` → (least, greatest) difference.
    pairs: Vec<Bound>,
}

impl Bounds {
    fn add(&mut self, cols: (usize, usize), least: Option<i64>, greatest: Option<i64>) {
        let entry = match self.pairs.iter_mut().find(|p| p.0 == cols) {
            Some(e) => e,
            None => {
                self.pairs.push((cols, None, None));
                self.pairs.last_mut().expect("pushed")
            }
        };
        if let Some(l) = least {
            entry.1 = Some(entry.1.map_or(l, |x: i64| x.max(l)));
        }
        if let Some(g) = greatest {
            entry.2 = Some(entry.2.map_or(g, |x: i64| x.min(g)));
        }
    }

    /// `a op b` with `a`, `b` time terms of different sides.
    fn compare(&mut self, a: &Expr, op: Operator, b: &Expr, j: &Join) {
        let (Some((sa, ca, oa)), Some((sb, cb, ob))) = (time_term(a, j), time_term(b, j)) else {
            return;
        };
        if sa == sb {
            return;
        }
        // a + oa op b + ob; with d = right - left
        let (op, c, cols) = if sa == 1 {
            // right + oa op left + ob  =>  d op ob - oa
            (op, ob - oa, (cb, ca))
        } else {
            // left + oa op right + ob  =>  -d op ob - oa  =>  d op' oa - ob
            let flipped = match op {
                Operator::Lt => Operator::Gt,
                Operator::LtEq => Operator::GtEq,
                Operator::Gt => Operator::Lt,
                Operator::GtEq => Operator::LtEq,
                other => other,
            };
            (flipped, oa - ob, (ca, cb))
        };
        match op {
            Operator::Gt | Operator::GtEq => self.add(cols, Some(c), None),
            Operator::Lt | Operator::LtEq => self.add(cols, None, Some(c)),
            Operator::Eq => self.add(cols, Some(c), Some(c)),
            _ => {}
        }
    }
}

const TIME_BOUND: &str = "joining two streams needs a time bound between their event times, both ways, so that each side's rows can be released: add e.g. AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '1' SECOND (an interval join), or join two windowed views on window_end (a window join)";

/// Plans the join of two streams (their branches `sides`) within a time bound.
pub(super) fn interval_plan(
    state: &SessionState,
    j: &Join,
    sides: [&Branch; 2],
) -> LResult<(IntervalPlan, [usize; 2])> {
    if j.join_type != JoinType::Inner {
        return err(
            Part::From,
            format!(
                "only an inner join of two streams is supported (found {}): unmatched rows of a stream are never final",
                j.join_type
            ),
        );
    }
    let is_time = |side: usize, col: usize| sides[side].time_cols.iter().any(|(_, p)| *p == col);
    let mut bounds = Bounds::default();
    let mut keys: [Vec<Expr>; 2] = Default::default();
    for (l, r) in &j.on {
        match (time_term(l, j), time_term(r, j)) {
            (Some((0, lc, 0)), Some((1, rc, 0))) if is_time(0, lc) && is_time(1, rc) => {
                bounds.add((lc, rc), Some(0), Some(0));
            }
            _ => {
                keys[0].push(l.clone());
                keys[1].push(r.clone());
            }
        }
    }
    if let Some(f) = &j.filter {
        for c in split_conjunction(f) {
            match c {
                Expr::BinaryExpr(b) => bounds.compare(&b.left, b.op, &b.right, j),
                Expr::Between(b) if !b.negated => {
                    bounds.compare(&b.expr, Operator::GtEq, &b.low, j);
                    bounds.compare(&b.expr, Operator::LtEq, &b.high, j);
                }
                _ => {}
            }
        }
    }
    let found = bounds
        .pairs
        .iter()
        .filter(|((l, r), ..)| is_time(0, *l) && is_time(1, *r))
        .find_map(|(cols, least, greatest)| Some((*cols, (*least)?, (*greatest)?)));
    let Some(((lt, rt), least, greatest)) = found else {
        return err(Part::From, TIME_BOUND);
    };
    if least > greatest {
        return err(
            Part::From,
            "the join's time bound is empty: no pair of rows can ever satisfy it",
        );
    }
    if keys[0].is_empty() {
        let one = Expr::Literal(ScalarValue::Boolean(Some(true)), None);
        keys = [vec![one.clone()], vec![one]];
    }
    let physical = |exprs: &[Expr], plan: &LogicalPlan| {
        exprs
            .iter()
            .map(|e| df(state.create_physical_expr(e.clone(), plan.schema())))
            .collect::<LResult<Vec<_>>>()
    };
    let key_types = keys[0]
        .iter()
        .map(|e| df(e.get_type(j.left.schema())))
        .collect::<LResult<Vec<_>>>()?;
    let both = df(j.left.schema().join(j.right.schema()))?;
    let mut condition: Vec<Expr> = j.on.iter().map(|(l, r)| l.clone().eq(r.clone())).collect();
    condition.extend(j.filter.clone());
    let filter = match condition.into_iter().reduce(Expr::and) {
        Some(c) => Some(df(state.create_physical_expr(c, &both))?),
        None => None,
    };
    let d = |ns: i64| {
        let s = humantime::format_duration(std::time::Duration::from_nanos(ns.unsigned_abs()));
        if ns < 0 {
            format!("-{s}")
        } else {
            format!("+{s}")
        }
    };
    let (lname, rname) = (
        j.left.schema().field(lt).name().clone(),
        j.right.schema().field(rt).name().clone(),
    );
    let description = format!(
        "interval join of two streams on {} key{}: right.{rname} - left.{lname} in [{}, {}]; state: each side's rows per key until the watermark passes them by the bound (released by the watermark; rows at or before it are late)",
        keys[0].len(),
        if keys[0].len() == 1 { "" } else { "s" },
        d(least),
        d(greatest)
    );
    let plan = IntervalPlan {
        keys: [physical(&keys[0], &j.left)?, physical(&keys[1], &j.right)?],
        time: [lt, rt],
        before: -least,
        after: greatest,
        filter,
        schema: Arc::new(j.schema.as_arrow().clone()),
        key_types,
        sides: [
            Arc::new(j.left.schema().as_arrow().clone()),
            Arc::new(j.right.schema().as_arrow().clone()),
        ],
        description,
    };
    Ok((plan, [lt, rt]))
}

/// The function an `ASOF JOIN`'s match condition is wrapped in so that it reaches the
/// lowering (DataFusion plans no ASOF join): never evaluated.
pub(super) const ASOF_MARKER: &str = "weir_asof_match_condition";

/// The marker function, for the planning context.
pub(super) fn asof_marker() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{Volatility, create_udf};
    create_udf(
        ASOF_MARKER,
        vec![DataType::Boolean],
        DataType::Boolean,
        Volatility::Volatile,
        Arc::new(|_| {
            datafusion::common::exec_err!(
                "{ASOF_MARKER} is only the match condition of an ASOF JOIN"
            )
        }),
    )
}

/// Rewrites `a ASOF JOIN b MATCH_CONDITION (cond) ON keys` into `a LEFT JOIN b ON keys AND
/// marker(cond)`, in every query of `query`.
pub(super) fn rewrite_asof(query: &mut ast::Query) {
    struct Rewrite;
    impl ast::VisitorMut for Rewrite {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<()> {
            rewrite_set_expr(&mut q.body);
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(query, &mut Rewrite);
}

fn rewrite_set_expr(e: &mut ast::SetExpr) {
    match e {
        ast::SetExpr::Select(s) => s.from.iter_mut().for_each(rewrite_joins),
        ast::SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left);
            rewrite_set_expr(right);
        }
        _ => {}
    }
}

fn rewrite_joins(t: &mut ast::TableWithJoins) {
    if let ast::TableFactor::NestedJoin {
        table_with_joins, ..
    } = &mut t.relation
    {
        rewrite_joins(table_with_joins);
    }
    for j in &mut t.joins {
        if let ast::TableFactor::NestedJoin {
            table_with_joins, ..
        } = &mut j.relation
        {
            rewrite_joins(table_with_joins);
        }
        let ast::JoinOperator::AsOf {
            match_condition,
            constraint,
        } = &j.join_operator
        else {
            continue;
        };
        let marker = ast::Expr::Function(ast::Function {
            name: ast::ObjectName::from(vec![ast::Ident::new(ASOF_MARKER)]),
            uses_odbc_syntax: false,
            parameters: ast::FunctionArguments::None,
            args: ast::FunctionArguments::List(ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                    match_condition.clone(),
                ))],
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        });
        let on = match constraint {
            ast::JoinConstraint::On(keys) => ast::Expr::BinaryOp {
                left: Box::new(keys.clone()),
                op: ast::BinaryOperator::And,
                right: Box::new(marker),
            },
            _ => marker,
        };
        j.join_operator = ast::JoinOperator::Left(ast::JoinConstraint::On(on));
    }
}

/// The ASOF join `j` was rewritten from, when it is one: its match condition.
pub(super) fn asof_condition(j: &Join) -> Option<&Expr> {
    let f = j.filter.as_ref()?;
    split_conjunction(f).into_iter().find_map(|c| match c {
        Expr::ScalarFunction(sf) if sf.name() == ASOF_MARKER => sf.args.first(),
        _ => None,
    })
}

/// Plans `j`, an `ASOF JOIN` of two streams (their branches `sides`) with match condition
/// `condition`.
pub(super) fn asof_plan(
    state: &SessionState,
    j: &Join,
    condition: &Expr,
    sides: [&Branch; 2],
) -> LResult<(AsOfPlan, [usize; 2])> {
    const SHAPE: &str = "ASOF JOIN takes MATCH_CONDITION (left.time >= right.time) (or >) on the two streams' event-time columns, and ON equalities of keys only: e.g. FROM vibration v ASOF JOIN setpoints s MATCH_CONDITION (v.ts >= s.ts) ON v.machine = s.machine";
    let others = split_conjunction(j.filter.as_ref().expect("has the marker"))
        .into_iter()
        .filter(|c| !matches!(c, Expr::ScalarFunction(sf) if sf.name() == ASOF_MARKER))
        .count();
    if others > 0 {
        return err(Part::From, SHAPE);
    }
    let Expr::BinaryExpr(b) = condition else {
        return err(Part::From, SHAPE);
    };
    let (l, r, strict) = match (time_term(&b.left, j), b.op, time_term(&b.right, j)) {
        (Some((0, l, 0)), Operator::GtEq, Some((1, r, 0))) => (l, r, false),
        (Some((0, l, 0)), Operator::Gt, Some((1, r, 0))) => (l, r, true),
        (Some((1, r, 0)), Operator::LtEq, Some((0, l, 0))) => (l, r, false),
        (Some((1, r, 0)), Operator::Lt, Some((0, l, 0))) => (l, r, true),
        _ => return err(Part::From, SHAPE),
    };
    let is_time = |side: usize, col: usize| sides[side].time_cols.iter().any(|(_, p)| *p == col);
    if !is_time(0, l) || !is_time(1, r) {
        return err(
            Part::From,
            "the MATCH_CONDITION of an ASOF JOIN compares the two streams' event-time columns (each source's event_time, or a view's window_start/window_end)",
        );
    }
    let (mut lk, mut rk): (Vec<Expr>, Vec<Expr>) = j.on.iter().cloned().unzip();
    if lk.is_empty() {
        let one = Expr::Literal(ScalarValue::Boolean(Some(true)), None);
        (lk, rk) = (vec![one.clone()], vec![one]);
    }
    let physical = |exprs: &[Expr], plan: &LogicalPlan| {
        exprs
            .iter()
            .map(|e| df(state.create_physical_expr(e.clone(), plan.schema())))
            .collect::<LResult<Vec<_>>>()
    };
    let key_types = lk
        .iter()
        .map(|e| df(e.get_type(j.left.schema())))
        .collect::<LResult<Vec<_>>>()?;
    let description = format!(
        "ASOF join of two streams on {} key{}: each left row with the latest right row whose {} is {} its {}, once the watermark passes it (nulls when none); state: per key the latest right row at the watermark and the rows after it, and the left rows the watermark has not reached",
        lk.len(),
        if lk.len() == 1 { "" } else { "s" },
        j.right.schema().field(r).name(),
        if strict { "before" } else { "at or before" },
        j.left.schema().field(l).name(),
    );
    let plan = AsOfPlan {
        keys: [physical(&lk, &j.left)?, physical(&rk, &j.right)?],
        time: [l, r],
        strict,
        schema: Arc::new(j.schema.as_arrow().clone()),
        right_schema: Arc::new(j.right.schema().as_arrow().clone()),
        key_types,
        description,
    };
    Ok((plan, [l, r]))
}
