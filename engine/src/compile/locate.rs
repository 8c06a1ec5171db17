//! Finds where in a query an error lies when DataFusion's error carries no position: plans
//! ever larger parts of the `SELECT` until one fails.

use datafusion::execution::SessionState;
use datafusion::sql::parser::Statement as DfStatement;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, GroupByExpr, Query, Select, SelectItem, SetExpr, Spanned, Statement, Value,
    visit_expressions,
};

use crate::diagnostic::Location;

use super::lower::Part;

/// True when planning and optimizing `query` succeeds.
async fn plans(state: &SessionState, query: Query) -> bool {
    let stmt = DfStatement::Statement(Box::new(Statement::Query(Box::new(query))));
    match state.statement_to_plan(stmt).await {
        Ok(plan) => state.optimize(&plan).is_ok(),
        Err(_) => false,
    }
}

fn with_select(query: &Query, select: Select) -> Query {
    let mut q = query.clone();
    q.body = Box::new(SetExpr::Select(Box::new(select)));
    q.order_by = None;
    q.limit_clause = None;
    q
}

fn one() -> SelectItem {
    SelectItem::UnnamedExpr(SqlExpr::value(Value::Number("1".into(), false)))
}

fn loc(span: datafusion::sql::sqlparser::tokenizer::Span) -> Option<Location> {
    let l = Location::from_sql(span.start);
    (!l.is_unknown()).then_some(l)
}

/// The location of the first part of `query` that does not plan.
pub async fn locate(state: &SessionState, query: &Query) -> Option<Location> {
    let SetExpr::Select(sel) = query.body.as_ref() else {
        return None;
    };
    let mut base = sel.as_ref().clone();
    base.projection = vec![one()];
    base.selection = None;
    base.group_by = GroupByExpr::Expressions(vec![], vec![]);
    base.having = None;
    if !plans(state, with_select(query, base.clone())).await {
        return sel.from.first().and_then(|f| loc(f.relation.span()));
    }
    if let Some(w) = &sel.selection {
        base.selection = Some(w.clone());
        if !plans(state, with_select(query, base.clone())).await {
            return loc(w.span());
        }
    }
    base.group_by = sel.group_by.clone();
    for item in &sel.projection {
        let mut s = base.clone();
        s.projection = vec![item.clone()];
        if !plans(state, with_select(query, s)).await {
            return loc(item.span());
        }
    }
    if let Some(h) = &sel.having {
        let mut s = base.clone();
        s.projection = sel.projection.clone();
        s.having = Some(h.clone());
        if !plans(state, with_select(query, s)).await {
            return loc(h.span());
        }
    }
    None
}

/// Where the first call of function `name` (case-insensitive) is in `query`.
pub fn function_location(query: &Query, name: &str) -> Option<Location> {
    let found = visit_expressions(query, |e| match e {
        SqlExpr::Function(f)
            if f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case(name)) =>
        {
            ControlFlow::Break(loc(f.span()))
        }
        _ => ControlFlow::Continue(()),
    });
    match found {
        ControlFlow::Break(at) => at,
        ControlFlow::Continue(()) => None,
    }
}

/// The location of a part of the query named by the lowering.
pub fn part_location(query: &Query, part: &Part) -> Option<Location> {
    if let Part::Function(name) = part {
        return function_location(query, name);
    }
    let SetExpr::Select(sel) = query.body.as_ref() else {
        return None;
    };
    match part {
        Part::Statement | Part::Function(_) => None,
        Part::From => sel.from.first().and_then(|f| loc(f.relation.span())),
        Part::GroupBy => match &sel.group_by {
            GroupByExpr::Expressions(exprs, _) => exprs.first().and_then(|e| loc(e.span())),
            GroupByExpr::All(_) => None,
        },
    }
}
