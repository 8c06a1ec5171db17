//! The engine's phase, failed sources and listeners, and sources that never delivered, for
//! `/readyz`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::telemetry::{Connection, READY, SourceTelemetry};
use crate::sync::lock;

/// How long every source may fail without having delivered a row before the engine is not
/// ready (`--unready-after`).
pub const DEFAULT_UNREADY_AFTER: Duration = Duration::from_secs(60);

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading pipeline files and starting sources and sinks.
    Starting,
    /// Every pipeline started.
    Running,
    /// Stopping: sources stop, windows are handled, sinks flush.
    Stopping,
    /// The run is over.
    Finished,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    pipelines: usize,
    failed: Vec<(String, String)>,
    /// The run's sources, to see whether they deliver.
    sources: Vec<Arc<SourceTelemetry>>,
    /// When the run's sources started.
    running_since: Option<Instant>,
    /// `--unready-after`.
    unready_after: Duration,
    /// Listeners (Flight SQL) that failed; they do not come back.
    listeners: Vec<(String, String)>,
}

/// Shared between the runtime (which updates it) and the HTTP endpoints (which read it).
#[derive(Debug)]
pub struct RunStatus {
    state: Mutex<State>,
}

impl Default for RunStatus {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                phase: Phase::Starting,
                pipelines: 0,
                failed: Vec::new(),
                sources: Vec::new(),
                running_since: None,
                unready_after: DEFAULT_UNREADY_AFTER,
                listeners: Vec::new(),
            }),
        }
    }
}

impl RunStatus {
    /// A status in the `Starting` phase.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A status whose sources may all fail without delivering for `unready_after` before
    /// the engine reports not ready.
    pub fn with_unready_after(unready_after: Duration) -> Arc<Self> {
        let s = Self::default();
        lock(&s.state).unready_after = unready_after;
        Arc::new(s)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = lock(&self.state);
        f(&mut s);
        READY.gauge_with(&[]).set(if ready(&s) { 1.0 } else { 0.0 });
    }

    /// A (new) run is being set up: failures of an earlier run no longer count.
    pub fn starting(&self) {
        self.update(|s| {
            s.phase = Phase::Starting;
            s.failed.clear();
            s.sources.clear();
            s.running_since = None;
        });
    }

    /// Every source, sink and pipeline of the run has started; `sources` are watched for
    /// delivering.
    pub fn running(&self, pipelines: usize, sources: Vec<Arc<SourceTelemetry>>) {
        self.update(|s| {
            s.phase = Phase::Running;
            s.pipelines = pipelines;
            s.sources = sources;
            s.running_since = Some(Instant::now());
        });
    }

    /// The telemetry of the running run's sources.
    pub fn sources(&self) -> Vec<Arc<SourceTelemetry>> {
        lock(&self.state).sources.clone()
    }

    /// A listener (`what`, e.g. Flight SQL) failed and serves no more.
    pub fn listener_failed(&self, what: &str, error: &str) {
        self.update(|s| s.listeners.push((what.to_string(), error.to_string())));
    }

    /// A source ended with an error and will not come back in this run.
    pub fn source_failed(&self, source: &str, error: &str) {
        self.update(|s| s.failed.push((source.to_string(), error.to_string())));
    }

    /// The run is stopping.
    pub fn stopping(&self) {
        self.update(|s| s.phase = Phase::Stopping);
    }

    /// The run is over.
    pub fn finished(&self) {
        self.update(|s| s.phase = Phase::Finished);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        lock(&self.state).phase
    }

    /// Whether the engine is ready, with a one-line-per-fact explanation (also sets the
    /// `weir_ready` gauge, which depends on time through the sources' failing).
    pub fn readiness(&self) -> (bool, String) {
        let s = lock(&self.state);
        READY.gauge_with(&[]).set(if ready(&s) { 1.0 } else { 0.0 });
        let mut text = match s.phase {
            Phase::Starting => "starting\n".to_string(),
            Phase::Running => format!("running: {} pipeline(s) started\n", s.pipelines),
            Phase::Stopping => "stopping\n".to_string(),
            Phase::Finished => "finished\n".to_string(),
        };
        for (name, error) in &s.failed {
            text.push_str(&format!("source {name} failed: {error}\n"));
        }
        for (what, error) in &s.listeners {
            text.push_str(&format!("{what} failed: {error}\n"));
        }
        if let Some(for_how_long) = never_delivering(&s) {
            text.push_str(&format!(
                "no source has delivered a row in {}s and every one is failing to connect (--unready-after {}s): {}\n",
                for_how_long.as_secs(),
                s.unready_after.as_secs(),
                s.sources
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        (ready(&s), text)
    }
}

/// How long the run has been going when every source is failing to connect and none has
/// delivered a row, once that is longer than `--unready-after`.
fn never_delivering(s: &State) -> Option<Duration> {
    let since = s.running_since?.elapsed();
    let all_failing = !s.sources.is_empty()
        && s.sources
            .iter()
            .all(|t| t.connection() == Connection::Down && t.counts().rows == 0);
    (all_failing && since > s.unready_after).then_some(since)
}

fn ready(s: &State) -> bool {
    s.phase == Phase::Running
        && s.failed.is_empty()
        && s.listeners.is_empty()
        && never_delivering(s).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_running_without_failed_sources() {
        let s = RunStatus::new();
        assert!(!s.readiness().0);
        s.running(2, vec![]);
        let (ok, text) = s.readiness();
        assert!(ok, "{text}");
        assert!(text.contains("2 pipeline(s)"));
        s.source_failed("plc", "connection refused");
        let (ok, text) = s.readiness();
        assert!(!ok);
        assert!(
            text.contains("source plc failed: connection refused"),
            "{text}"
        );
        s.starting();
        s.running(1, vec![]);
        assert!(s.readiness().0, "a new run starts without the old failures");
        s.stopping();
        assert!(!s.readiness().0);
    }

    #[test]
    fn sources_that_never_deliver_and_all_fail_make_it_unready() {
        let s = RunStatus::with_unready_after(Duration::from_millis(50));
        let (a, b) = (
            Arc::new(SourceTelemetry::new("a")),
            Arc::new(SourceTelemetry::new("b")),
        );
        a.set_connection(Connection::Down);
        b.set_connection(Connection::Down);
        s.running(1, vec![Arc::clone(&a), Arc::clone(&b)]);
        assert!(s.readiness().0, "not for the first --unready-after");
        std::thread::sleep(Duration::from_millis(80));
        let (ok, text) = s.readiness();
        assert!(!ok);
        assert!(text.contains("every one is failing to connect"), "{text}");
        assert!(text.contains("a, b"), "{text}");
        b.set_connection(Connection::Up);
        assert!(s.readiness().0, "one source connected");
        b.set_connection(Connection::Down);
        b.rows(1);
        assert!(s.readiness().0, "one source delivered before it failed");
        s.listener_failed("Flight SQL", "address in use");
        let (ok, text) = s.readiness();
        assert!(
            !ok && text.contains("Flight SQL failed: address in use"),
            "{text}"
        );
        s.starting();
        s.running(1, vec![]);
        assert!(
            !s.readiness().0,
            "a failed listener does not come back with a new run"
        );
    }
}
