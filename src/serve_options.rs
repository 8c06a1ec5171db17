//! `weir run`'s options for live state and the Flight SQL server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use weir_engine::flight::{self, FlightSettings, TlsFiles};
use weir_engine::live::{LatestBounds, LiveSettings, QueryLimits};
use weir_engine::parse::options::parse_size;

/// Flight SQL and the live tables it serves.
#[derive(Args, Debug)]
pub struct ServeOptions {
    /// Flight SQL listening address. Served when a token is set (--flight-token or
    /// WEIR_FLIGHT_TOKEN) or with --flight-no-auth.
    #[arg(long, env = "WEIR_FLIGHT_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], flight::DEFAULT_PORT)))]
    pub flight_addr: SocketAddr,
    /// Bearer token Flight SQL clients must present (also the password of a Basic
    /// handshake, with any user name).
    #[arg(long, env = "WEIR_FLIGHT_TOKEN", hide_env_values = true)]
    pub flight_token: Option<String>,
    /// Serve Flight SQL without authentication (only on a loopback address).
    #[arg(long, conflicts_with = "flight_token")]
    pub flight_no_auth: bool,
    /// TLS certificate chain (PEM) for Flight SQL.
    #[arg(long, env = "WEIR_FLIGHT_TLS_CERT", requires = "flight_tls_key")]
    pub flight_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for Flight SQL.
    #[arg(long, env = "WEIR_FLIGHT_TLS_KEY", requires = "flight_tls_cert")]
    pub flight_tls_key: Option<PathBuf>,
    /// Rows of recent output kept per pipeline (history.<name>).
    #[arg(long, default_value_t = LiveSettings::default().history_rows)]
    pub live_history_rows: usize,
    /// Age after which recent output leaves history.<name>.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub live_history_age: Duration,
    /// Raw rows kept per source (sources.<name>).
    #[arg(long, default_value_t = LiveSettings::default().source_rows)]
    pub live_source_rows: usize,
    /// Group keys kept per latest.<name> table; past it the key updated longest ago is
    /// evicted.
    #[arg(long, default_value_t = LiveSettings::default().latest.max_keys as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub live_latest_keys: u64,
    /// A key of latest.<name> not updated for this long is evicted ("0s": never).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub live_latest_age: Duration,
    /// Memory all running Flight SQL queries together may take (operators and results;
    /// nothing spills); a query that needs more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub flight_query_memory: u64,
    /// Longest a Flight SQL query may run before DEADLINE_EXCEEDED ("0s": no limit).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub flight_query_timeout: Duration,
    /// Flight SQL queries that may run at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub flight_query_concurrency: u32,
}

impl ServeOptions {
    /// The Flight SQL server's settings, or None when it is off.
    pub fn flight(&self) -> Option<FlightSettings> {
        if self.flight_token.is_none() && !self.flight_no_auth {
            return None;
        }
        Some(FlightSettings {
            addr: self.flight_addr,
            token: self.flight_token.clone(),
            tls: self
                .flight_tls_cert
                .clone()
                .zip(self.flight_tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
            queries: QueryLimits {
                memory: usize::try_from(self.flight_query_memory).unwrap_or(usize::MAX),
                timeout: self.flight_query_timeout,
                concurrency: self.flight_query_concurrency as usize,
            },
        })
    }

    /// How much live state to keep.
    pub fn live(&self) -> LiveSettings {
        LiveSettings {
            history_rows: self.live_history_rows,
            history_age: self.live_history_age,
            source_rows: self.live_source_rows,
            latest: LatestBounds {
                max_keys: usize::try_from(self.live_latest_keys).unwrap_or(usize::MAX),
                max_age: (!self.live_latest_age.is_zero()).then_some(self.live_latest_age),
            },
        }
    }
}
