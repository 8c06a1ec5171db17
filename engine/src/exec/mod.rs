//! Streaming execution: stateless steps, window assignment, windowed aggregation, and the
//! dataflow that connects sources, views and sinks.

pub(crate) mod asof_join;
pub mod budget;
pub(crate) mod chain;
pub mod dataflow;
pub mod ids;
pub(crate) mod interpolate;
pub(crate) mod interval_join;
pub mod isolate;
pub(crate) mod kept_rows;
pub(crate) mod lookup;
pub(crate) mod pipeline;
pub mod pushdown;
pub(crate) mod running;
pub mod snapshot;
pub(crate) mod window;
