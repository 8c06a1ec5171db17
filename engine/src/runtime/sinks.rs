//! The sinks of a run: one task each behind a bounded channel, ticking about once a second,
//! closed by a deadline when the run ends.

use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::DEFAULT_GRACE;
use crate::compile::CompiledSink;
use crate::connector::Sink;
use crate::exec::dataflow::SinkBatch;
use crate::observe::telemetry::SinkTelemetry;

/// Batches that may wait for one sink.
const QUEUE: usize = 16;

/// The running sink tasks.
pub(super) struct SinkTasks {
    inputs: Vec<mpsc::Sender<RecordBatch>>,
    tasks: Vec<(JoinHandle<()>, Arc<SinkTelemetry>)>,
    close_by: watch::Sender<Option<tokio::time::Instant>>,
}

impl SinkTasks {
    /// Starts a task per sink.
    pub(super) fn start(sinks: Vec<CompiledSink>) -> Self {
        let (close_by, close_rx) = watch::channel(None);
        let mut inputs = Vec::new();
        let mut tasks = Vec::new();
        for s in sinks {
            let (tx, rx) = mpsc::channel(QUEUE);
            inputs.push(tx);
            let task = tokio::spawn(drive(
                s.sink,
                Arc::clone(&s.telemetry),
                rx,
                close_rx.clone(),
            ));
            tasks.push((task, s.telemetry));
        }
        Self {
            inputs,
            tasks,
            close_by,
        }
    }

    /// Hands rows to their sinks, waiting while a sink's queue is full (backpressure).
    pub(super) async fn send(&self, batches: Vec<SinkBatch>) {
        for b in batches {
            let _ = self.inputs[b.sink.index()].send(b.batch).await;
        }
    }

    /// Lets every sink write what it has and close by `deadline`.
    pub(super) async fn close(self, deadline: tokio::time::Instant) {
        self.close_by.send_replace(Some(deadline));
        drop(self.inputs);
        for (task, telemetry) in self.tasks {
            if let Err(e) = task.await {
                telemetry.failed("task", e);
            }
        }
    }
}

/// One sink's task: writes what comes, ticks, and closes when its input ends.
async fn drive(
    mut sink: Box<dyn Sink>,
    telemetry: Arc<SinkTelemetry>,
    mut rx: mpsc::Receiver<RecordBatch>,
    close_by: watch::Receiver<Option<tokio::time::Instant>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let result = tokio::select! {
            b = rx.recv() => match b {
                Some(b) => {
                    telemetry.wrote(b.num_rows() as u64);
                    sink.write(b).await
                }
                None => break,
            },
            _ = tick.tick() => sink.tick().await,
        };
        if let Err(e) = result {
            telemetry.failed("write", format!("{e:#}"));
        }
    }
    let deadline = close_by
        .borrow()
        .unwrap_or_else(|| tokio::time::Instant::now() + DEFAULT_GRACE);
    if let Err(e) = sink.close(deadline).await {
        telemetry.failed("close", format!("{e:#}"));
    }
}
