//! The sinks of a run: one task each behind a bounded channel, ticking about once a second,
//! closed by a deadline when the run ends.

use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::DEFAULT_GRACE;
use crate::compile::CompiledSink;
use crate::connector::{Sink, SinkStart};
use crate::exec::dataflow::SinkBatch;
use crate::observe::telemetry::{SinkCounts, SinkTelemetry};

/// Per sink, its name and whether it could start (with its error if not).
pub(super) type Started = Vec<(String, oneshot::Receiver<Result<(), String>>)>;

/// What a sink's pre-commit answers: its state for the checkpoint and its counters.
pub(super) type PreCommitted = anyhow::Result<(serde_json::Value, SinkCounts)>;

/// What the run tells a sink task, in order.
pub(super) enum SinkMsg {
    /// Rows to write.
    Rows(RecordBatch),
    /// Pre-commit what came since the last one as checkpoint `number`.
    PreCommit(u64, oneshot::Sender<PreCommitted>),
    /// Checkpoint `number` is complete; `oldest_kept` is the oldest still kept.
    Commit(u64, u64),
}

/// Batches that may wait for one sink.
const QUEUE: usize = 16;

/// The running sink tasks.
pub(super) struct SinkTasks {
    inputs: Vec<mpsc::Sender<SinkMsg>>,
    tasks: Vec<(JoinHandle<()>, Arc<SinkTelemetry>)>,
    close_by: watch::Sender<Option<tokio::time::Instant>>,
}

impl SinkTasks {
    /// Starts a task per sink; `starts[i]` is what sink `i` is told before anything else.
    /// The receivers answer, per sink, whether it could start (with the error if not).
    pub(super) fn start(sinks: Vec<CompiledSink>, starts: Vec<SinkStart>) -> (Self, Started) {
        let (close_by, close_rx) = watch::channel(None);
        let mut inputs = Vec::new();
        let mut tasks = Vec::new();
        let mut started = Vec::new();
        for (s, start) in sinks.into_iter().zip(starts) {
            let (tx, rx) = mpsc::channel(QUEUE);
            inputs.push(tx);
            let (ready, answer) = oneshot::channel();
            started.push((s.name.clone(), answer));
            let task = tokio::spawn(drive(
                s.sink,
                Arc::clone(&s.telemetry),
                (start, ready),
                rx,
                close_rx.clone(),
            ));
            tasks.push((task, s.telemetry));
        }
        let tasks = Self {
            inputs,
            tasks,
            close_by,
        };
        (tasks, started)
    }

    /// Hands rows to their sinks, waiting while a sink's queue is full (backpressure).
    pub(super) async fn send(&self, batches: Vec<SinkBatch>) {
        for b in batches {
            let _ = self.inputs[b.sink.index()]
                .send(SinkMsg::Rows(b.batch))
                .await;
        }
    }

    /// Tells sink `i` something, in order with its rows.
    async fn tell(&self, i: usize, msg: SinkMsg) {
        let _ = self.inputs[i].send(msg).await;
    }

    /// Asks every sink to pre-commit as checkpoint `number`; the answers come on the
    /// receivers, in sink order (a sink that is gone answers nothing: the receiver fails).
    pub(super) async fn pre_commit(&self, number: u64) -> Vec<oneshot::Receiver<PreCommitted>> {
        let mut answers = Vec::with_capacity(self.inputs.len());
        for i in 0..self.inputs.len() {
            let (tx, rx) = oneshot::channel();
            self.tell(i, SinkMsg::PreCommit(number, tx)).await;
            answers.push(rx);
        }
        answers
    }

    /// Tells every sink that checkpoint `number` is complete.
    pub(super) async fn commit(&self, number: u64, oldest_kept: u64) {
        for i in 0..self.inputs.len() {
            self.tell(i, SinkMsg::Commit(number, oldest_kept)).await;
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
    (start, ready): (SinkStart, oneshot::Sender<Result<(), String>>),
    mut rx: mpsc::Receiver<SinkMsg>,
    close_by: watch::Receiver<Option<tokio::time::Instant>>,
) {
    let _ = ready.send(sink.start(start).await.map_err(|e| format!("{e:#}")));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let (what, result) = tokio::select! {
            m = rx.recv() => match m {
                Some(SinkMsg::Rows(b)) => {
                    telemetry.wrote(b.num_rows() as u64);
                    ("write", sink.write(b).await)
                }
                Some(SinkMsg::PreCommit(number, answer)) => {
                    let r = sink.pre_commit(number).await;
                    let _ = answer.send(r.map(|state| (state, telemetry.counts())));
                    continue;
                }
                Some(SinkMsg::Commit(number, oldest)) => {
                    ("commit", sink.commit(number, oldest).await)
                }
                None => break,
            },
            _ = tick.tick() => ("write", sink.tick().await),
        };
        if let Err(e) = result {
            telemetry.failed(what, format!("{e:#}"));
        }
    }
    let deadline = close_by
        .borrow()
        .unwrap_or_else(|| tokio::time::Instant::now() + DEFAULT_GRACE);
    if let Err(e) = sink.close(deadline).await {
        telemetry.failed("close", format!("{e:#}"));
    }
}
