//! The engine's phase and failed sources, for `/readyz`.

use std::sync::{Arc, Mutex};

use super::telemetry::READY;
use crate::sync::lock;

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
            }),
        }
    }
}

impl RunStatus {
    /// A status in the `Starting` phase.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
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
        });
    }

    /// Every source, sink and pipeline of the run has started.
    pub fn running(&self, pipelines: usize) {
        self.update(|s| {
            s.phase = Phase::Running;
            s.pipelines = pipelines;
        });
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

    /// Whether the engine is ready, with a one-line-per-fact explanation.
    pub fn readiness(&self) -> (bool, String) {
        let s = lock(&self.state);
        let mut text = match s.phase {
            Phase::Starting => "starting\n".to_string(),
            Phase::Running => format!("running: {} pipeline(s) started\n", s.pipelines),
            Phase::Stopping => "stopping\n".to_string(),
            Phase::Finished => "finished\n".to_string(),
        };
        for (name, error) in &s.failed {
            text.push_str(&format!("source {name} failed: {error}\n"));
        }
        (ready(&s), text)
    }
}

fn ready(s: &State) -> bool {
    s.phase == Phase::Running && s.failed.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_running_without_failed_sources() {
        let s = RunStatus::new();
        assert!(!s.readiness().0);
        s.running(2);
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
        s.running(1);
        assert!(s.readiness().0, "a new run starts without the old failures");
        s.stopping();
        assert!(!s.readiness().0);
    }
}
