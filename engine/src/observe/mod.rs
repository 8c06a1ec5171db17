//! What the engine tells the outside about itself: Prometheus metrics, process figures,
//! liveness and readiness, served over HTTP.

pub mod http;
#[cfg(feature = "page")]
pub mod page;
pub mod process;
pub mod status;
pub mod telemetry;

pub use http::{Endpoints, serve};
#[cfg(feature = "page")]
pub use page::{Page, PageInfo};
pub use status::RunStatus;
