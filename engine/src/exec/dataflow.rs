//! The running graph of streams and pipelines: routes batches from sources through views to
//! sinks and moves watermarks forward, in one task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::compute::{filter_record_batch, is_not_null};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use tracing::info;

use super::budget::{StateLimits, resume_below};
use super::ids::{PipelineId, SinkId, StreamId};
use super::isolate::RowDeadLetters;
use super::pipeline::{PipelineExec, Target};
use crate::observe::telemetry::{PipelineCounts, SourceTelemetry};

/// Event-time settings of a source stream.
#[derive(Debug, Clone)]
pub struct SourceClock {
    /// Event-time column.
    pub event_time: usize,
    /// How late a row may arrive (ns).
    pub delay: i64,
    /// After this long without rows the source stops holding back the watermark.
    pub idle_timeout: Duration,
    /// Largest event time seen.
    pub max_time: Option<i64>,
}

/// Whether a stream can still hold back the watermarks of its readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Rows are flowing.
    Active,
    /// No rows for longer than the idle timeout.
    Idle,
    /// No more rows will come.
    Finished,
}

impl StreamStatus {
    /// `active`, `idle` or `finished`.
    pub fn label(self) -> &'static str {
        match self {
            StreamStatus::Active => "active",
            StreamStatus::Idle => "idle",
            StreamStatus::Finished => "finished",
        }
    }
}

/// A pipeline reading a stream, through one of its input branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// The pipeline.
    pub pipeline: PipelineId,
    /// Which of its inputs (several with `UNION ALL`).
    pub branch: usize,
}

/// A source or a view, as the dataflow sees it.
#[derive(Debug)]
pub struct StreamState {
    /// Name.
    pub name: String,
    /// Schema of its rows.
    pub schema: SchemaRef,
    /// Watermark per time column: rows with a time at or before it are late.
    pub watermarks: HashMap<usize, i64>,
    /// Pipelines reading it.
    pub readers: Vec<Reader>,
    /// Active, idle or finished.
    pub status: StreamStatus,
    /// Event-time settings, for sources.
    pub clock: Option<SourceClock>,
    /// When the last batch arrived.
    pub last_batch: Option<Instant>,
    /// For sources: where rows read and rows without event time are counted.
    pub telemetry: Option<Arc<SourceTelemetry>>,
    /// A hash of its definition (a source's statement, a view's plan): a checkpoint's
    /// state is restored only into the same definition.
    pub fingerprint: u64,
}

impl StreamState {
    /// A stream with no readers yet.
    pub fn new(
        name: &str,
        schema: SchemaRef,
        clock: Option<SourceClock>,
        telemetry: Option<Arc<SourceTelemetry>>,
        fingerprint: u64,
    ) -> Self {
        Self {
            name: name.to_string(),
            schema,
            watermarks: HashMap::new(),
            readers: Vec::new(),
            status: StreamStatus::Active,
            clock,
            last_batch: None,
            telemetry,
            fingerprint,
        }
    }

    /// The watermark of the source's event-time column.
    pub fn event_time_watermark(&self) -> Option<i64> {
        let c = self.clock.as_ref()?;
        self.watermarks.get(&c.event_time).copied()
    }
}

/// Rows bound for a sink.
#[derive(Debug, Clone)]
pub struct SinkBatch {
    /// The sink.
    pub sink: SinkId,
    /// The rows.
    pub batch: RecordBatch,
}

/// The streams and pipelines of a project, in dependency order.
pub struct Dataflow {
    /// Sources first, then views, by id.
    pub(crate) streams: Vec<StreamState>,
    /// Pipelines in dependency order (a pipeline only reads streams defined before it).
    pub(crate) pipelines: Vec<PipelineExec>,
    /// Emit (true) or drop (false) open windows when the input ends.
    emit_on_end: bool,
    finished: Vec<bool>,
    pub(super) last_watermark: Vec<Option<i64>>,
    sink_out: Vec<SinkBatch>,
    /// Every pipeline's output since the last [`Dataflow::take_outputs`], when kept.
    outputs: Option<Vec<(PipelineId, RecordBatch)>>,
    /// The process-wide state budget and default policy.
    state_limits: StateLimits,
    /// Over the process budget: pipelines were asked to shed state.
    over_process_budget: bool,
}

/// How one input contributes to a pipeline's watermark.
enum Contribution {
    /// Holds it back to this value (`None`: no rows yet, hold everything).
    Holds(Option<i64>),
    /// Idle or finished: does not hold it back; its own watermark, if any.
    Excluded(Option<i64>),
}

impl Dataflow {
    /// A dataflow over `streams` and `pipelines`; readers are wired from the branches.
    pub(crate) fn new(
        mut streams: Vec<StreamState>,
        pipelines: Vec<PipelineExec>,
        emit_on_end: bool,
    ) -> Self {
        for (p, pipe) in pipelines.iter().enumerate() {
            for (b, branch) in pipe.branches.iter().enumerate() {
                streams[branch.stream.index()].readers.push(Reader {
                    pipeline: PipelineId::new(p),
                    branch: b,
                });
            }
        }
        let n = pipelines.len();
        Self {
            streams,
            pipelines,
            emit_on_end,
            finished: vec![false; n],
            last_watermark: vec![None; n],
            sink_out: Vec::new(),
            outputs: None,
            state_limits: StateLimits::default(),
            over_process_budget: false,
        }
    }

    /// Sets the process-wide state budget, and the policy of pipelines that declare none.
    pub fn set_state_limits(&mut self, limits: StateLimits) {
        self.state_limits = limits;
        for p in &mut self.pipelines {
            p.budget.apply(&limits);
        }
        if let Some(l) = limits.max_bytes {
            crate::observe::telemetry::STATE_LIMIT
                .gauge_with(&[])
                .set(l as f64);
        }
    }

    /// Bytes of window state all pipelines hold.
    pub fn total_state_bytes(&self) -> usize {
        self.pipelines.iter().map(PipelineExec::state_bytes).sum()
    }

    /// Over the process budget: the pipelines holding the most state apply their policies,
    /// largest first, until what they free brings the total under 90% of the budget.
    fn keep_process_budget(&mut self) {
        let Some(limit) = self.state_limits.max_bytes else {
            return;
        };
        let total = self.total_state_bytes();
        if total <= limit {
            if self.over_process_budget && total < resume_below(limit) {
                self.over_process_budget = false;
                for p in &mut self.pipelines {
                    p.process_budget_cleared();
                }
            }
            return;
        }
        self.over_process_budget = true;
        let mut by_size: Vec<(usize, usize)> = self
            .pipelines
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.finished[*i])
            .map(|(i, p)| (p.state_bytes(), i))
            .filter(|(b, _)| *b > 0)
            .collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        let mut remaining = total;
        for (bytes, i) in by_size {
            if remaining < resume_below(limit) {
                break;
            }
            let free = remaining - resume_below(limit);
            let result = self.pipelines[i].shed(limit, free);
            let after = self.pipelines[i].state_bytes();
            remaining = remaining.saturating_sub(bytes.saturating_sub(after));
            self.route(PipelineId::new(i), result);
        }
    }

    /// Number of pipelines (views and inserts).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// The schema of stream `id`.
    pub fn stream_schema(&self, id: StreamId) -> &SchemaRef {
        &self.streams[id.index()].schema
    }

    /// The pipelines that insert into sink `sink`: their names and plan fingerprints.
    pub fn pipelines_into(&self, sink: SinkId) -> Vec<(String, String)> {
        self.pipelines
            .iter()
            .filter(|p| p.target == Target::Sink(sink))
            .map(|p| (p.name.clone(), crate::checkpoint::hex(p.fingerprint)))
            .collect()
    }

    /// The columns the pipelines inserting into sink `sink` produce.
    pub fn sink_schema(&self, sink: SinkId) -> Option<SchemaRef> {
        self.pipelines
            .iter()
            .find(|p| p.target == Target::Sink(sink))
            .map(|p| Arc::clone(&p.schema))
    }

    /// The counters of pipeline `p`.
    pub fn pipeline_counts(&self, p: PipelineId) -> PipelineCounts {
        self.pipelines[p.index()].telemetry.counts()
    }

    /// Approximate bytes of window (or join) state pipeline `p` holds.
    pub fn state_bytes(&self, p: PipelineId) -> usize {
        self.pipelines[p.index()].state_bytes()
    }

    /// Rows any pipeline cannot evaluate are written to `dead_letters` from now on.
    pub fn set_row_dead_letters(&mut self, dead_letters: Arc<RowDeadLetters>) {
        for p in &mut self.pipelines {
            p.dead_letters = Some(Arc::clone(&dead_letters));
        }
    }

    /// From now on keeps every pipeline's output rows for [`Dataflow::take_outputs`].
    pub fn keep_outputs(&mut self) {
        self.outputs.get_or_insert_with(Vec::new);
    }

    /// Output rows of pipelines since the last call, if kept.
    pub fn take_outputs(&mut self) -> Vec<(PipelineId, RecordBatch)> {
        self.outputs
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// True once pipeline `p` has seen the end of all its inputs.
    pub fn is_pipeline_finished(&self, p: PipelineId) -> bool {
        self.finished[p.index()]
    }

    /// The watermark pipeline `p` last closed windows up to.
    pub fn watermark(&self, p: PipelineId) -> Option<i64> {
        self.last_watermark[p.index()]
    }

    /// A batch from source stream `stream`; returns rows for the sinks.
    pub fn on_batch(
        &mut self,
        stream: StreamId,
        batch: RecordBatch,
        now: Instant,
    ) -> Vec<SinkBatch> {
        let batch = self.admit(stream, batch, now);
        if batch.num_rows() > 0 {
            self.deliver(stream, batch);
        }
        self.propagate();
        self.keep_process_budget();
        std::mem::take(&mut self.sink_out)
    }

    /// Source stream `stream` has ended.
    pub fn on_source_end(&mut self, stream: StreamId) -> Vec<SinkBatch> {
        self.streams[stream.index()].status = StreamStatus::Finished;
        self.propagate();
        std::mem::take(&mut self.sink_out)
    }

    /// Periodic check: sources silent for longer than their idle timeout stop holding back
    /// watermarks.
    pub fn on_tick(&mut self, now: Instant) -> Vec<SinkBatch> {
        let mut changed = false;
        for s in &mut self.streams {
            if let (Some(clock), Some(last)) = (&s.clock, s.last_batch)
                && s.status == StreamStatus::Active
                && now.duration_since(last) >= clock.idle_timeout
            {
                info!(source = %s.name, timeout = ?clock.idle_timeout, "source idle: no longer holding back the watermark");
                s.status = StreamStatus::Idle;
                changed = true;
            }
        }
        if changed {
            self.propagate();
        }
        self.record_watermark_lag();
        for p in &self.pipelines {
            p.record_state_bytes();
        }
        std::mem::take(&mut self.sink_out)
    }

    /// True when every pipeline has finished.
    pub fn is_finished(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }

    /// Source bookkeeping: drops rows without event time, tracks the largest event time.
    fn admit(&mut self, stream: StreamId, batch: RecordBatch, now: Instant) -> RecordBatch {
        let s = &mut self.streams[stream.index()];
        if s.status == StreamStatus::Idle {
            info!(source = %s.name, "source active again");
        }
        s.status = StreamStatus::Active;
        s.last_batch = Some(now);
        let batch = match &mut s.clock {
            None => batch,
            Some(clock) => {
                let col = batch.column(clock.event_time);
                let batch = if col.null_count() > 0 {
                    if let Some(t) = &s.telemetry {
                        t.null_time_rows(col.null_count() as u64);
                    }
                    match is_not_null(col).and_then(|m| filter_record_batch(&batch, &m)) {
                        Ok(b) => b,
                        Err(_) => return batch.slice(0, 0),
                    }
                } else {
                    batch
                };
                let times = batch
                    .column(clock.event_time)
                    .as_primitive::<TimestampNanosecondType>();
                if let Some(max) = arrow::compute::max(times) {
                    let max = clock.max_time.map_or(max, |m| m.max(max));
                    clock.max_time = Some(max);
                    s.watermarks
                        .insert(clock.event_time, max.saturating_sub(clock.delay));
                }
                batch
            }
        };
        if let Some(t) = &s.telemetry {
            t.rows(batch.num_rows() as u64);
        }
        batch
    }

    fn deliver(&mut self, stream: StreamId, batch: RecordBatch) {
        let readers = self.streams[stream.index()].readers.clone();
        for r in readers {
            let p = r.pipeline.index();
            if self.finished[p] {
                continue;
            }
            let result = self.pipelines[p].process(r.branch, batch.clone());
            self.route(r.pipeline, result);
        }
    }

    fn route(&mut self, p: PipelineId, result: datafusion::common::Result<Vec<RecordBatch>>) {
        let pipe = &self.pipelines[p.index()];
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                pipe.telemetry.failed(e);
                if pipe.budget.failed {
                    self.stop_failed(p);
                }
                return;
            }
        };
        let target = pipe.target;
        for b in out {
            if let Some(kept) = &mut self.outputs {
                kept.push((p, b.clone()));
            }
            match target {
                Target::Sink(sink) => self.sink_out.push(SinkBatch { sink, batch: b }),
                Target::Stream(s) => self.deliver(s, b),
            }
        }
    }

    /// Sets each windowed pipeline's watermark lag (wall clock minus watermark).
    fn record_watermark_lag(&self) {
        let now = crate::clock::now_nanos();
        for (pipe, w) in self.pipelines.iter().zip(&self.last_watermark) {
            if let (Some(_), Some(w)) = (&pipe.window, w) {
                pipe.telemetry
                    .watermark_lag(now.saturating_sub(*w) as f64 / 1e9);
            }
        }
    }

    fn contribution(&self, stream: StreamId, col: usize) -> Contribution {
        let s = &self.streams[stream.index()];
        let wm = s.watermarks.get(&col).copied();
        match s.status {
            StreamStatus::Active => Contribution::Holds(wm),
            StreamStatus::Idle | StreamStatus::Finished => Contribution::Excluded(wm),
        }
    }

    /// The watermark over inputs `(stream, column)`: the minimum over inputs that hold it
    /// back; when all are idle, the largest of theirs.
    fn combined(&self, inputs: impl Iterator<Item = (StreamId, usize)>) -> Option<i64> {
        let mut held: Option<Option<i64>> = None;
        let mut excluded: Option<i64> = None;
        for (stream, col) in inputs {
            match self.contribution(stream, col) {
                Contribution::Holds(w) => {
                    held = Some(match held {
                        None => w,
                        Some(prev) => prev.zip(w).map(|(a, b)| a.min(b)),
                    })
                }
                Contribution::Excluded(w) => excluded = excluded.max(w),
            }
        }
        match held {
            Some(w) => w,
            None => excluded,
        }
    }

    /// Moves watermarks through the graph in dependency order, emitting closed windows.
    fn propagate(&mut self) {
        for p in (0..self.pipelines.len()).map(PipelineId::new) {
            if self.finished[p.index()] {
                continue;
            }
            if self.all_inputs_finished(p) {
                self.finish_pipeline(p);
                continue;
            }
            self.advance_windows(p);
            self.update_output_watermarks(p);
        }
    }

    fn all_inputs_finished(&self, p: PipelineId) -> bool {
        self.pipelines[p.index()]
            .branches
            .iter()
            .all(|b| self.streams[b.stream.index()].status == StreamStatus::Finished)
    }

    /// Pipeline `p` stopped (its state policy is `fail`): it takes no more rows and its
    /// stream, if it is a view, ends.
    pub(super) fn stop_failed(&mut self, p: PipelineId) {
        self.finished[p.index()] = true;
        if let Target::Stream(s) = self.pipelines[p.index()].target {
            self.streams[s.index()].status = StreamStatus::Finished;
        }
    }

    /// Every input of `p` has ended: its open windows are emitted (or dropped) and its
    /// stream, if it is a view, ends too.
    fn finish_pipeline(&mut self, p: PipelineId) {
        let emit = self.emit_on_end;
        let result = self.pipelines[p.index()].finish(emit);
        self.route(p, result);
        self.finished[p.index()] = true;
        if let Target::Stream(s) = self.pipelines[p.index()].target {
            self.streams[s.index()].status = StreamStatus::Finished;
        }
    }

    /// Closes the windows of `p` that its inputs' watermark has passed.
    fn advance_windows(&mut self, p: PipelineId) {
        let pipe = &self.pipelines[p.index()];
        let by_branch = |cols: &[usize]| -> Vec<(StreamId, usize)> {
            pipe.branches
                .iter()
                .zip(cols)
                .map(|(b, &c)| (b.stream, c))
                .collect()
        };
        let inputs: Vec<(StreamId, usize)> = match (&pipe.window, &pipe.join) {
            (Some(win), _) => by_branch(&win.time_col),
            (None, Some(j)) => by_branch(&j.time_col),
            // rows held by `interpolate` leave by the watermark of every time column read
            (None, None) if pipe.post.hold() > 0 => pipe
                .branches
                .iter()
                .flat_map(|b| b.time_cols.iter().map(|(c, _)| (b.stream, *c)))
                .collect(),
            (None, None) => return,
        };
        let w = self.combined(inputs.into_iter());
        if let Some(w) = w
            && self.last_watermark[p.index()].is_none_or(|last| w > last)
        {
            self.last_watermark[p.index()] = Some(w);
            let result = self.pipelines[p.index()].advance(w);
            self.route(p, result);
        }
    }

    fn update_output_watermarks(&mut self, p: PipelineId) {
        let pipe = &self.pipelines[p.index()];
        let Target::Stream(out) = pipe.target else {
            return;
        };
        let mut marks = Vec::new();
        match &pipe.window {
            Some(win) => {
                if let (Some(col), Some(w)) = (win.out_end, self.last_watermark[p.index()]) {
                    marks.push((col, w));
                }
                if let (Some(col), Some(lb)) = (win.out_start, win.op.start_lower_bound()) {
                    marks.push((col, lb.saturating_sub(1)));
                }
            }
            None if pipe.join.is_some() => {
                let j = pipe.join.as_ref().expect("matched");
                if let Some(w) = self.last_watermark[p.index()] {
                    for &(col, lag) in &j.out_time {
                        marks.push((col, w.saturating_sub(lag)));
                    }
                }
            }
            None => {
                for &(pre, out_col) in &pipe.out_time {
                    let inputs = pipe.branches.iter().filter_map(|b| {
                        b.time_cols
                            .iter()
                            .find(|(_, q)| *q == pre)
                            .map(|(c, _)| (b.stream, *c))
                    });
                    if let Some(w) = self.combined(inputs) {
                        marks.push((out_col, w));
                    }
                }
            }
        }
        // rows held by `interpolate` may leave up to its max_gap behind
        let hold = pipe.post.hold();
        for (col, w) in marks {
            self.streams[out.index()]
                .watermarks
                .insert(col, w.saturating_sub(hold));
        }
    }
}
