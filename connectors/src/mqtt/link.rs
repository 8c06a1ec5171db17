//! Connection state of one MQTT client: logs when the link goes down and comes back, counts
//! failures, and waits (exponential backoff with jitter) before the next attempt.

use tracing::{error, info, warn};

use super::client::ConnectError;
use weir_engine::backoff::Reconnect;

/// The link of one source or sink to its broker.
pub struct Link {
    /// `source` or `sink`.
    role: &'static str,
    name: String,
    broker: String,
    reconnect: Reconnect,
    was_up: bool,
    failures: u64,
    on_state: Box<dyn Fn(bool) + Send>,
    failure_count: metrics::Counter,
}

impl Link {
    /// A link for the `role` called `name`; `on_state(up)` is called on every change and
    /// `failure_count` counts failed or lost connections.
    pub fn new(
        role: &'static str,
        name: &str,
        broker: String,
        on_state: Box<dyn Fn(bool) + Send>,
        failure_count: metrics::Counter,
    ) -> Link {
        on_state(false);
        Link {
            role,
            name: name.to_string(),
            broker,
            reconnect: Reconnect::default(),
            was_up: false,
            failures: 0,
            on_state,
            failure_count,
        }
    }

    /// The broker as `host:port`.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Whether the connection is up.
    pub fn is_up(&self) -> bool {
        self.was_up
    }

    /// The broker accepted the connection.
    pub fn up(&mut self, session_present: bool) {
        (self.on_state)(true);
        info!(
            role = self.role,
            name = %self.name,
            broker = %self.broker,
            session_present,
            failed_attempts = self.failures,
            "mqtt connected"
        );
        self.was_up = true;
        self.failures = 0;
        self.reconnect.reset();
    }

    /// The connection failed or broke: logs (every failure after being up, then on attempts
    /// 1, 2, 4, 8, ... while down; always when refused) and waits before the next attempt.
    pub async fn down(&mut self, e: ConnectError) {
        (self.on_state)(false);
        self.failure_count.increment(1);
        self.failures += 1;
        let delay = self.reconnect.next_delay();
        if e.refused {
            error!(role = self.role, name = %self.name, error = %e, retry_in = ?delay,
                "mqtt connection refused: check username, password and client_id");
        } else if self.was_up || self.failures.is_power_of_two() {
            warn!(role = self.role, name = %self.name, error = %e, failed_attempts = self.failures,
                retry_in = ?delay, "mqtt connection down; reconnecting");
        }
        self.was_up = false;
        tokio::time::sleep(delay).await;
    }
}
