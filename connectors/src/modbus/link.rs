//! The connection of one Modbus source or sink to its TCP server or serial line: opened on
//! demand, dropped after a timeout or transport error (a late answer would otherwise be taken
//! for the next one), reopened at once the first time and then with exponential backoff
//! while it keeps failing. Reports the state to the part's telemetry and the logs.

use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::Context;
use tracing::{info, warn};
use weir_engine::backoff::Reconnect;

use super::telemetry::{CONNECTION_FAILURES, REQUESTS, SINK_CONNECTION_FAILURES, SINK_REQUESTS};
use super::transport::Transport;
use crate::owner::Owner;

/// One source's or sink's link to its devices.
pub struct Link {
    transport: Transport,
    timeout: Duration,
    owner: Owner,
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
    pub fn new(transport: Transport, timeout: Duration, owner: Owner) -> Link {
        owner.set_up(false);
        let name = [owner.name()];
        let (requests, failure_count) = match owner {
            Owner::Source(_) => (
                REQUESTS.counter_with(&name),
                CONNECTION_FAILURES.counter_with(&name),
            ),
            Owner::Sink(_) => (
                SINK_REQUESTS.counter_with(&name),
                SINK_CONNECTION_FAILURES.counter_with(&name),
            ),
        };
        Link {
            transport,
            timeout,
            owner,
            context: None,
            reconnect: Reconnect::default(),
            next_attempt: None,
            failures: 0,
            was_up: false,
            requests,
            failure_count,
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
                    info!(part = %self.owner.name(), device = %self.transport,
                        failed_attempts = self.failures, "modbus connected");
                    self.owner.set_up(true);
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
                        warn!(part = %self.owner.name(), device = %self.transport, error = %e,
                            failed_attempts = self.failures, retry_in = ?delay,
                            "modbus cannot connect; retrying");
                    }
                    self.was_up = false;
                    self.owner.set_up(false);
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
            warn!(part = %self.owner.name(), device = %self.transport, reason = why,
                "modbus connection closed; reopening");
            self.owner.set_up(false);
        }
    }

    /// A request succeeded: backoff starts over at its shortest delay.
    pub fn confirm(&mut self) {
        self.reconnect.reset();
    }
}
