//! A run's checkpoints: restoring the newest one before anything starts, taking one at every
//! interval (or when a source asks), and telling sinks and sources when one is complete.
//!
//! Taking one: at a cut between two batches the dataflow's state is captured (the only
//! part that pauses the dataflow) and every sink is asked to pre-commit; a task then waits
//! for the sinks' answers and writes the files. The dataflow goes on meanwhile. When the
//! checkpoint is durable, sinks commit and sources learn which of their batches it covers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::UInt64Array;
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use super::sinks::{PreCommitted, SinkTasks};
use crate::checkpoint::{
    CheckpointStore, Manifest, Restored, SinkEntry, SourceEntry, Taken, hex, manifest::FORMAT,
};
use crate::compile::CompiledSource;
use crate::connector::{Progress, Resume, SinkCheckpoints, SourceStart};
use crate::exec::dataflow::Dataflow;
use crate::exec::ids::StreamId;
use crate::observe::telemetry::{
    CheckpointTelemetry, RestoredCheckpoint, SinkTelemetry, SourceCounts,
};

/// How a run takes checkpoints.
#[derive(Debug, Clone)]
pub struct RunCheckpoints {
    /// The opened state directory (locked for the process).
    pub store: Arc<CheckpointStore>,
    /// Time between checkpoints.
    pub interval: Duration,
    /// On a stop (signal, reload) open windows stay open in the final checkpoint instead
    /// of being emitted (`--open-windows keep`).
    pub keep_open_windows: bool,
    /// Where checkpoints are counted.
    pub telemetry: Arc<CheckpointTelemetry>,
}

/// Complete checkpoints kept: the newest and the one before, to fall back to.
const KEEP: usize = 2;

/// What the run knows of one source for checkpoints.
struct SourceProgress {
    name: String,
    connector: String,
    fingerprint: u64,
    /// Number of the last batch consumed.
    batch: u64,
    offset: Option<serde_json::Value>,
    last_batch_ns: Option<i64>,
    /// Ids of messages of batches consumed since the cut three complete checkpoints ago.
    delivered: VecDeque<(u64, Vec<u64>)>,
    /// The batches the last complete checkpoints cover (their cuts), newest last.
    cuts: VecDeque<u64>,
    /// Tells the source the last batch two complete checkpoints cover.
    committed: watch::Sender<u64>,
    counts: Arc<crate::observe::telemetry::SourceTelemetry>,
}

/// The checkpoint being written.
struct InFlight {
    number: u64,
    taken_ns: i64,
    started: Instant,
    /// Per source, the batch the cut covers.
    cut: Vec<u64>,
    done: oneshot::Receiver<anyhow::Result<u64>>,
}

/// A run's checkpoints.
pub(super) struct Checkpoints {
    settings: RunCheckpoints,
    next: u64,
    /// The number of the newest complete checkpoint (0: none).
    newest: u64,
    sources: Vec<SourceProgress>,
    in_flight: Option<InFlight>,
    wanted: bool,
    timer: tokio::time::Interval,
    sink_names: Vec<String>,
}

/// How a checkpoint ended.
pub(super) type Outcome = Result<anyhow::Result<u64>, oneshot::error::RecvError>;

impl Checkpoints {
    /// Restores the newest complete checkpoint of the state directory into `dataflow` and
    /// prepares the sources (their positions). Returns the checkpoints, per source the
    /// receiver of its committed batches, and per sink what it recovers before its first
    /// row.
    pub(super) async fn restore(
        settings: RunCheckpoints,
        dataflow: &mut Dataflow,
        sources: &mut [CompiledSource],
        sinks: &[(String, Arc<SinkTelemetry>)],
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    ) -> (Self, Vec<watch::Receiver<u64>>, Vec<SinkCheckpoints>) {
        let store = Arc::clone(&settings.store);
        let restored = tokio::task::spawn_blocking(move || store.newest())
            .await
            .unwrap_or_default();
        let mut receivers = Vec::new();
        let mut progress = Vec::new();
        for s in sources.iter() {
            let (tx, rx) = watch::channel(0);
            receivers.push(rx);
            progress.push(SourceProgress {
                name: s.name.clone(),
                connector: s.connector.clone(),
                fingerprint: dataflow.streams[s.stream.index()].fingerprint,
                batch: 0,
                offset: None,
                last_batch_ns: None,
                delivered: VecDeque::new(),
                cuts: VecDeque::new(),
                committed: tx,
                counts: Arc::clone(&s.telemetry),
            });
        }
        let mut timer = tokio::time::interval(settings.interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.reset();
        let mut me = Self {
            next: 1,
            newest: 0,
            sources: progress,
            in_flight: None,
            wanted: false,
            timer,
            sink_names: sinks.iter().map(|(name, _)| name.clone()).collect(),
            settings,
        };
        let restored_sinks = match restored {
            Some(r) => me.apply(r, dataflow, sources, sinks, filters),
            None => {
                info!(state_dir = %me.settings.store.dir().display(),
                    "no checkpoint to restore: starting from the beginning");
                for (s, filter) in sources.iter_mut().zip(filters) {
                    me.prepare(s, None, filter);
                }
                vec![None; sinks.len()]
            }
        };
        let recover = restored_sinks
            .into_iter()
            .map(|restored| SinkCheckpoints {
                lineage: me.settings.store.lineage().to_string(),
                restored,
            })
            .collect();
        (me, receivers, recover)
    }

    fn prepare(
        &self,
        s: &mut CompiledSource,
        resume: Option<Resume>,
        filter: Option<Arc<dyn PhysicalExpr>>,
    ) {
        let start = SourceStart {
            checkpoints: true,
            resume,
            filter: filter.clone(),
        };
        if let Err(e) = s.source.prepare(start) {
            error!(source = %s.name, error = %format!("{e:#}"),
                "the source cannot resume from the checkpoint's position: it starts from the beginning");
            let _ = s.source.prepare(SourceStart {
                checkpoints: true,
                resume: None,
                filter,
            });
        }
    }

    /// Applies checkpoint `r`; returns, per sink, what it pre-committed for it.
    fn apply(
        &mut self,
        mut r: Restored,
        dataflow: &mut Dataflow,
        sources: &mut [CompiledSource],
        sinks: &[(String, Arc<SinkTelemetry>)],
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    ) -> Vec<Option<(u64, serde_json::Value)>> {
        let number = r.manifest.number;
        if r.manifest.lineage != self.settings.store.lineage() {
            warn!(
                checkpoint = number,
                "the checkpoint belongs to another lineage of the state directory"
            );
        }
        let bounded: Vec<bool> = (0..dataflow.streams.len())
            .map(|i| {
                sources
                    .iter()
                    .find(|s| s.stream.index() == i)
                    .is_some_and(|s| s.source.is_bounded())
            })
            .collect();
        let report = dataflow.restore(&mut r, &bounded);
        let entries = std::mem::take(&mut r.manifest.sources);
        let mut positions = Vec::new();
        for ((i, s), filter) in sources.iter_mut().enumerate().zip(filters) {
            let entry = entries.iter().find(|e| e.name == s.name);
            let resume = match entry {
                Some(e) if e.fingerprint == hex(self.sources[i].fingerprint) => {
                    s.telemetry.restore(&e.counts);
                    let delivered = r
                        .file(&e.delivered_file)
                        .map(|b| delivered_ids(&b))
                        .unwrap_or_default();
                    if !s.source.resumes() {
                        let gap = e.last_batch_ns.map_or(r.age, |t| {
                            Duration::from_nanos((crate::clock::now_nanos() - t).max(0) as u64)
                        });
                        self.settings.telemetry.source_gap(&s.name, gap);
                        warn!(source = %s.name, connector = %s.connector, gap = ?gap,
                            "the source reads live values and cannot replay: its pipelines' state is restored, the values of the gap are missing");
                    }
                    let position = match (&e.offset, s.source.resumes()) {
                        (Some(o), _) => o.to_string(),
                        (None, true) => format!(
                            "the broker's session ({} messages it may deliver again)",
                            delivered.len()
                        ),
                        (None, false) => "live values, no replay".to_string(),
                    };
                    positions.push(format!("{}: {position}", s.name));
                    // the batch numbers of the new run start again at 1
                    self.sources[i].delivered.push_back((0, delivered.clone()));
                    Some(Resume {
                        offset: e.offset.clone(),
                        delivered,
                    })
                }
                Some(_) => {
                    warn!(source = %s.name, "the source's statement changed since the checkpoint: it starts from the beginning");
                    None
                }
                None => None,
            };
            self.prepare(s, resume, filter);
        }
        let sink_states: Vec<Option<(u64, serde_json::Value)>> = sinks
            .iter()
            .map(|(name, telemetry)| {
                let e = r.manifest.sinks.iter().find(|e| &e.name == name)?;
                telemetry.restore(&e.counts);
                Some((number, e.state.clone()))
            })
            .collect();
        info!(
            checkpoint = number,
            age = ?r.age,
            bytes = r.bytes,
            windows = report.windows,
            groups = report.groups,
            pipelines_restored = report.restored.len(),
            pipelines_changed = report.changed.len(),
            positions = %positions.join("; "),
            "restored the newest checkpoint"
        );
        self.settings.telemetry.restored(
            RestoredCheckpoint {
                number,
                age: r.age,
                windows: report.windows,
                groups: report.groups,
                changed: report.changed,
            },
            r.manifest.taken_ns,
        );
        self.next = number + 1;
        self.newest = number;
        sink_states
    }

    /// A batch of source `stream` was consumed.
    pub(super) fn consumed(&mut self, stream: StreamId, number: u64, progress: Progress) {
        let Some(s) = self.sources.get_mut(stream.index()) else {
            return;
        };
        s.batch = number;
        s.last_batch_ns = Some(crate::clock::now_nanos());
        if progress.offset.is_some() {
            s.offset = progress.offset;
        }
        if !progress.delivered.is_empty() {
            s.delivered.push_back((number, progress.delivered));
        }
    }

    /// Sets `weir_checkpoint_age_seconds`.
    pub(super) fn refresh_age(&self) {
        self.settings.telemetry.refresh_age();
    }

    /// A source asked for a checkpoint.
    pub(super) fn want(&mut self) {
        self.wanted = true;
    }

    /// True when a checkpoint may start now (none is being written).
    pub(super) fn idle(&self) -> bool {
        self.in_flight.is_none()
    }

    /// Resolves when the next checkpoint is due (the interval passed, or a source asked)
    /// and none is being written; never while one is.
    pub(super) async fn due(&mut self) {
        if self.in_flight.is_some() {
            return std::future::pending().await;
        }
        if self.wanted {
            return;
        }
        self.timer.tick().await;
    }

    /// Resolves when the checkpoint being written is done (never when none is).
    pub(super) async fn done(&mut self) -> Outcome {
        match &mut self.in_flight {
            Some(f) => (&mut f.done).await,
            None => std::future::pending().await,
        }
    }

    /// Takes a checkpoint at this cut: captures the dataflow, asks the sinks to
    /// pre-commit, and leaves the writing to a task.
    pub(super) async fn start(&mut self, dataflow: &mut Dataflow, sinks: &SinkTasks) {
        debug_assert!(self.in_flight.is_none());
        self.wanted = false;
        self.timer.reset();
        let number = self.next;
        self.next += 1;
        let started = Instant::now();
        let taken_ns = crate::clock::now_nanos();
        let mut files = Vec::new();
        let (streams, pipelines) = match dataflow.capture(&mut files) {
            Ok(c) => c,
            Err(e) => {
                self.settings
                    .telemetry
                    .failed(format!("taking the pipelines' state: {e}"));
                return;
            }
        };
        let sources = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let ids: Vec<u64> = s.delivered.iter().flat_map(|(_, d)| d).copied().collect();
                let delivered_file = (!ids.is_empty()).then(|| {
                    let name = format!("s{i}-delivered.arrow");
                    let batch =
                        RecordBatch::try_from_iter([("id", Arc::new(UInt64Array::from(ids)) as _)])
                            .expect("one column");
                    files.push((name.clone(), batch));
                    name
                });
                SourceEntry {
                    name: s.name.clone(),
                    connector: s.connector.clone(),
                    fingerprint: hex(s.fingerprint),
                    offset: s.offset.clone(),
                    batch: s.batch,
                    last_batch_ns: s.last_batch_ns,
                    delivered_file,
                    counts: SourceCounts {
                        connection: Default::default(),
                        ..s.counts.counts()
                    },
                }
            })
            .collect();
        let manifest = Manifest {
            format: FORMAT,
            number,
            lineage: self.settings.store.lineage().to_string(),
            taken_ns,
            version: env!("CARGO_PKG_VERSION").to_string(),
            streams,
            pipelines,
            sources,
            sinks: Vec::new(),
        };
        let answers = sinks.pre_commit(number).await;
        let cut = self.sources.iter().map(|s| s.batch).collect();
        let (tx, done) = oneshot::channel();
        let store = Arc::clone(&self.settings.store);
        let names = self.sink_names.clone();
        tokio::spawn(async move {
            let result = write(store, Taken { manifest, files }, names, answers).await;
            let _ = tx.send(result);
        });
        self.in_flight = Some(InFlight {
            number,
            taken_ns,
            started,
            cut,
            done,
        });
    }

    /// The checkpoint being written is done: on success sinks commit and sources learn
    /// which batches it covers.
    pub(super) async fn finished(&mut self, outcome: Outcome, sinks: &SinkTasks) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        let bytes = match outcome {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return self.settings.telemetry.failed(format!("{e:#}")),
            Err(_) => return self.settings.telemetry.failed("the checkpoint task ended"),
        };
        let oldest_kept = if self.newest > 0 {
            self.newest
        } else {
            f.number
        };
        self.newest = f.number;
        sinks.commit(f.number, oldest_kept).await;
        for (s, covered) in self.sources.iter_mut().zip(&f.cut) {
            s.cuts.push_back(*covered);
            if s.cuts.len() > 3 {
                s.cuts.pop_front();
            }
            // a batch may be acknowledged once the checkpoint before the newest covers it
            // too: the run falls back to that one if the newest turns out damaged, and a
            // broker delivers nothing it was told is done
            // every checkpoint is announced (a source waiting for one to ask for the next
            // wakes), with 0 while nothing may be acknowledged yet
            let acknowledgeable = match s.cuts.len() {
                n if n >= 2 => s.cuts[n - 2],
                _ => 0,
            };
            s.committed.send_replace(acknowledgeable);
            // ids are kept while an acknowledgement of theirs may not have reached the
            // broker: batches after the cut three checkpoints ago (ids a restored checkpoint
            // carried over, batch 0, as long)
            if s.cuts.len() == 3 {
                let oldest = s.cuts[0];
                s.delivered.retain(|(b, _)| *b > oldest);
            }
        }
        let store = Arc::clone(&self.settings.store);
        tokio::task::spawn_blocking(move || store.prune(KEEP));
        self.settings
            .telemetry
            .completed(f.taken_ns, f.started.elapsed(), bytes);
    }

    /// Waits for the checkpoint being written, if any, and handles its end.
    pub(super) async fn settle(&mut self, sinks: &SinkTasks) {
        if self.in_flight.is_some() {
            let outcome = self.done().await;
            self.finished(outcome, sinks).await;
        }
    }
}

/// Waits for the sinks' pre-commits and writes the checkpoint; its size in bytes.
async fn write(
    store: Arc<CheckpointStore>,
    mut taken: Taken,
    names: Vec<String>,
    answers: Vec<oneshot::Receiver<PreCommitted>>,
) -> anyhow::Result<u64> {
    for (name, answer) in names.into_iter().zip(answers) {
        let (state, counts) = answer
            .await
            .map_err(|_| anyhow::anyhow!("sink {name} stopped before its pre-commit"))?
            .map_err(|e| anyhow::anyhow!("sink {name}: pre-commit failed: {e:#}"))?;
        taken.manifest.sinks.push(SinkEntry {
            name,
            state,
            counts,
        });
    }
    tokio::task::spawn_blocking(move || store.write(&taken)).await?
}

/// The ids of a delivered-messages file.
fn delivered_ids(batch: &RecordBatch) -> Vec<u64> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}
