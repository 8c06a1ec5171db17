//! Predictive-maintenance SQL functions for Weir, registered into every pipeline's
//! DataFusion context.

use datafusion::prelude::SessionContext;

/// A function this crate adds, for `weir functions`.
#[derive(Debug, Clone, Copy)]
pub struct FunctionDoc {
    /// SQL name.
    pub name: &'static str,
    /// One-line description with units.
    pub description: &'static str,
}

/// Functions this crate registers.
pub const FUNCTIONS: &[FunctionDoc] = &[];

/// Registers every function of this crate into `ctx`.
pub fn register(ctx: &SessionContext) {
    let _ = ctx;
}
