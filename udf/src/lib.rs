//! Predictive-maintenance SQL functions for Weir, registered into every pipeline's
//! DataFusion context.

pub mod moment_functions;
pub mod moments;

use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;

use moment_functions::{MomentFunction, MomentKind};

/// A function this crate adds, for `weir functions`.
#[derive(Debug, Clone, Copy)]
pub struct FunctionDoc {
    /// SQL name.
    pub name: &'static str,
    /// One-line description with units.
    pub description: &'static str,
}

/// Every function this crate registers, with its description.
pub fn functions() -> Vec<FunctionDoc> {
    MomentKind::ALL
        .iter()
        .map(|(_, name, description)| FunctionDoc { name, description })
        .collect()
}

/// Registers every function of this crate into `ctx`.
pub fn register(ctx: &SessionContext) {
    for (kind, name, _) in MomentKind::ALL {
        ctx.register_udaf(AggregateUDF::from(MomentFunction::new(kind, name)));
    }
}
