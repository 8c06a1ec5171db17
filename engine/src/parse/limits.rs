//! Bounds on the size of one statement's expressions, checked on the parsed statement before
//! DataFusion plans it. A long flat `a OR b OR c ...` parses into a tree as deep as it is
//! long, and planning walks it recursively (and in places quadratically): unbounded, one
//! statement could overflow a thread's stack or keep a planner busy for minutes. Within these
//! bounds planning is quick and its stack use small (planning threads also get a large stack,
//! [`PLANNING_STACK`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Spanned, Visit, Visitor};

use crate::diagnostic::Location;

/// Deepest expression nesting accepted (operators, function arguments, subqueries).
pub const MAX_EXPR_DEPTH: usize = 256;
/// Most expression nodes accepted in one statement.
pub const MAX_EXPR_NODES: usize = 20_000;
/// Stack of the threads that parse and plan statements (pipeline files, Flight SQL queries).
pub const PLANNING_STACK: usize = 64 * 1024 * 1024;

/// A statement beyond the bounds: what is too large, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// Where the offending expression starts (unknown when the statement carries no spans).
    pub location: Location,
    /// What is wrong and what to do instead.
    pub message: String,
}

#[derive(Default)]
struct Measure {
    depth: usize,
    nodes: usize,
    outermost: Option<Location>,
    found: Option<TooLarge>,
}

impl Visitor for Measure {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<()> {
        if self.depth == 0 {
            self.outermost = Some(Location::from_sql(expr.span().start));
        }
        self.depth += 1;
        self.nodes += 1;
        let at = self.outermost.unwrap_or_default();
        if self.depth > MAX_EXPR_DEPTH {
            self.found = Some(TooLarge {
                location: at,
                message: format!(
                    "expression nested too deeply (more than {MAX_EXPR_DEPTH} levels): a long chain of OR or AND conditions is better written as `column IN (a, b, ...)`, or split into views"
                ),
            });
            return ControlFlow::Break(());
        }
        if self.nodes > MAX_EXPR_NODES {
            self.found = Some(TooLarge {
                location: at,
                message: format!(
                    "statement too large (more than {MAX_EXPR_NODES} expression terms): split it into views"
                ),
            });
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &ast::Expr) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

/// Checks the expressions of `statement` against [`MAX_EXPR_DEPTH`] and [`MAX_EXPR_NODES`].
/// The walk stops at the first bound exceeded, so its own depth is bounded too.
pub fn check_statement(statement: &ast::Statement) -> Result<(), TooLarge> {
    let mut m = Measure::default();
    let _ = statement.visit(&mut m);
    match m.found {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn parse(sql: &str) -> ast::Statement {
        Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_statement()
            .unwrap()
    }

    fn ors(n: usize) -> String {
        let terms = vec!["1 = 1"; n].join(" OR ");
        format!("SELECT 1 WHERE {terms}")
    }

    #[test]
    fn long_chains_are_refused_short_ones_pass() {
        assert!(check_statement(&parse(&ors(100))).is_ok());
        let e = check_statement(&parse(&ors(800))).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{}", e.message);
        assert_eq!(
            e.location,
            Location {
                line: 1,
                column: 16
            }
        );
        let in_list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        let wide = format!("SELECT 1 WHERE x IN ({})", in_list.join(", "));
        assert!(
            check_statement(&parse(&wide)).is_ok(),
            "a wide IN list is shallow"
        );
        let huge: Vec<String> = (0..30_000).map(|i| i.to_string()).collect();
        let huge = format!("SELECT 1 WHERE x IN ({})", huge.join(", "));
        let e = check_statement(&parse(&huge)).unwrap_err();
        assert!(e.message.contains("statement too large"), "{}", e.message);
    }
}
