//! Flight SQL: live tables to operators, dashboards and notebooks. The settings are part of
//! every build (so that `weir run`'s options parse the same everywhere); the server, on a
//! thread and runtime of its own so that queries do not hold up ingestion, is built with the
//! `flight` feature.

#[cfg(feature = "flight")]
mod auth;
#[cfg(feature = "flight")]
mod plain;
#[cfg(feature = "flight")]
mod server;
#[cfg(feature = "flight")]
mod sql;
#[cfg(feature = "flight")]
mod throttle;

#[cfg(feature = "flight")]
pub use server::{FlightServer, start};

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;

use crate::live::QueryLimits;

/// The port Flight SQL listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 50051;

/// Certificate and key files (PEM) for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// How the Flight SQL server listens.
#[derive(Debug, Clone)]
pub struct FlightSettings {
    /// Listening address.
    pub addr: SocketAddr,
    /// Bearer token; `None` serves without authentication (only on loopback).
    pub token: Option<String>,
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// Bounds on ad-hoc queries.
    pub queries: QueryLimits,
}

impl FlightSettings {
    /// Refuses to serve without authentication anywhere but on loopback.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.token.is_none() && !self.addr.ip().is_loopback() {
            bail!(
                "refusing to serve Flight SQL without authentication on {}: set a token (--flight-token or WEIR_FLIGHT_TOKEN) or listen on a loopback address",
                self.addr
            );
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            bail!("the Flight SQL token is empty");
        }
        Ok(())
    }
}
