//! What the engine tells the outside about itself: Prometheus metrics, process figures,
//! liveness and readiness, served over HTTP.

pub mod http;
pub mod page;
pub mod process;
pub mod status;
pub mod telemetry;

pub use http::{Endpoints, serve};
pub use page::{Page, PageInfo};
pub use status::RunStatus;
