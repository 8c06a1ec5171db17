//! The connection of one Modbus source to its TCP server or serial line: opened on demand,
//! dropped after a timeout or transport error (a late answer would otherwise be taken for
//! the next one), reopened at once the first time and then with exponential backoff while
//! it keeps failing. Reports the state to the source's telemetry and the logs.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::Context;
use tracing::{info, warn};
use weir_engine::backoff::Reconnect;
use weir_engine::connector::Connection;
use weir_engine::observe::telemetry::SourceTelemetry;

use super::telemetry::{CONNECTION_FAILURES, REQUESTS};
use super::transport::Transport;

/// One source's link to its devices.
pub struct Link {
    source: String,
    transport: Transport,
    timeout: Duration,
    telemetry: Arc<SourceTelemetry>,
    context: Option<Context>,
    reconnect: Reconnect,
    /// No attempt before this instant (backoff after a failed attempt).
    next_attempt: Option<Instant>,
    failures: u64,
    was_up: bool,
    /// Requests sent.
    requests: metrics::Counter,
    /// Failed connection attempts.
    failure_count: metrics::Counter,
}

impl Link {
    /// A link that connects on first use.
    pub fn new(
        source: &str,
        transport: Transport,
        timeout: Duration,
        telemetry: Arc<SourceTelemetry>,
    ) -> Link {
        telemetry.set_connection(Connection::Down);
        Link {
            source: source.to_string(),
            transport,
            timeout,
            telemetry,
            context: None,
            reconnect: Reconnect::default(),
            next_attempt: None,
            failures: 0,
            was_up: false,
            requests: REQUESTS.counter_with(&[source]),
            failure_count: CONNECTION_FAILURES.counter_with(&[source]),
        }
    }

    /// Counts a request sent.
    pub fn count_request(&self) {
        self.requests.increment(1);
    }

    /// The transport, for log context.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// While disconnected and backing off: when the next connection attempt is due.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next_attempt.filter(|_| self.context.is_none())
    }

    /// The open context, connecting first if needed; `None` while the device cannot be
    /// reached (the next attempt waits for the backoff delay).
    pub async fn context(&mut self) -> Option<&mut Context> {
        if self.context.is_none() {
            if self.next_attempt.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            match self.transport.connect(self.timeout).await {
                Ok(c) => {
                    info!(source = %self.source, device = %self.transport,
                        failed_attempts = self.failures, "modbus connected");
                    self.telemetry.set_connection(Connection::Up);
                    self.context = Some(c);
                    self.next_attempt = None;
                    self.failures = 0;
                    self.was_up = true;
                }
                Err(e) => {
                    self.failures += 1;
                    let delay = self.reconnect.next_delay();
                    self.next_attempt = Some(Instant::now() + delay);
                    self.failure_count.increment(1);
                    if self.was_up || self.failures.is_power_of_two() {
                        warn!(source = %self.source, device = %self.transport, error = %e,
                            failed_attempts = self.failures, retry_in = ?delay,
                            "modbus cannot connect; retrying");
                    }
                    self.was_up = false;
                    self.telemetry.set_connection(Connection::Down);
                    return None;
                }
            }
        }
        self.context.as_mut()
    }

    /// A request timed out or the transport failed: the connection is closed and reopened
    /// on the next request.
    pub fn drop_connection(&mut self, why: &str) {
        if self.context.take().is_some() {
            warn!(source = %self.source, device = %self.transport, reason = why,
                "modbus connection closed; reopening");
            self.telemetry.set_connection(Connection::Down);
        }
    }

    /// A request succeeded: backoff starts over at its shortest delay.
    pub fn confirm(&mut self) {
        self.reconnect.reset();
    }
}
