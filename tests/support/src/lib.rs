//! What Weir's tests and benches share. With the default `full` feature: `weir run` as a
//! child process ([`weir_process`]), the servers the tests start on free loopback ports
//! ([`mosquitto`], [`s3`], [`modbus_server`], [`process`]), a Sparkplug B edge node made
//! with Eclipse Tahu ([`sparkplug`]), test certificates ([`certs`]),
//! Flight SQL clients ([`flight`]), result comparison against DataFusion batch SQL
//! ([`compare`]), a TCP forwarder that can cut a link ([`tcp_proxy`]),
//! readers of a run's output ([`run_output`]), a harness that feeds the dataflow by hand
//! ([`harness`]) and the benches' fed source ([`bench`]). Without it only [`http`], which
//! needs nothing but the standard library, and [`browser`] (headless Chromium).
#![allow(clippy::unwrap_used)]

#[cfg(feature = "full")]
pub mod bench;
pub mod browser;
#[cfg(feature = "full")]
pub mod certs;
#[cfg(feature = "full")]
pub mod compare;
#[cfg(feature = "full")]
pub mod flight;
#[cfg(feature = "full")]
pub mod harness;
pub mod http;
#[cfg(feature = "full")]
pub mod modbus_server;
#[cfg(feature = "full")]
pub mod mosquitto;
#[cfg(feature = "full")]
pub mod process;
#[cfg(feature = "full")]
pub mod run_output;
#[cfg(feature = "full")]
pub mod s3;
#[cfg(feature = "full")]
pub mod sparkplug;
#[cfg(feature = "full")]
pub mod tcp_proxy;
#[cfg(feature = "full")]
pub mod weir_process;
