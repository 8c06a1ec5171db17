//! Weir's source connectors. Each implements the engine's [`weir_engine::connector`] traits.

pub mod conform;
pub mod file;
pub mod generator;
mod signals;

use std::sync::Arc;

use weir_engine::Connectors;

/// Every connector: the engine's sinks plus the sources of this crate.
pub fn all() -> Connectors {
    let mut c = Connectors::with_builtin_sinks();
    c.add_source(Arc::new(generator::GeneratorFactory));
    c.add_source(Arc::new(file::FileSourceFactory));
    c
}
