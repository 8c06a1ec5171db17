//! The running graph of streams and pipelines: routes batches from sources through views to
//! sinks and moves watermarks forward, in one task.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::compute::{filter_record_batch, is_not_null};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use tracing::{info, warn};

use super::pipeline::{PipelineExec, Target};

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

/// A source or a view, as the dataflow sees it.
#[derive(Debug)]
pub struct StreamState {
    /// Name.
    pub name: String,
    /// Schema of its rows.
    pub schema: SchemaRef,
    /// Watermark per time column: rows with a time at or before it are late.
    pub watermarks: HashMap<usize, i64>,
    /// Pipelines reading it, with the branch index.
    pub readers: Vec<(usize, usize)>,
    /// Active, idle or finished.
    pub status: StreamStatus,
    /// Event-time settings, for sources.
    pub clock: Option<SourceClock>,
    /// When the last batch arrived.
    pub last_batch: Option<Instant>,
    /// Rows that entered the stream.
    pub rows_in: u64,
    /// Source rows dropped for a null event time.
    pub null_time_rows: u64,
}

impl StreamState {
    /// A stream with no readers yet.
    pub fn new(name: &str, schema: SchemaRef, clock: Option<SourceClock>) -> Self {
        Self {
            name: name.to_string(),
            schema,
            watermarks: HashMap::new(),
            readers: Vec::new(),
            status: StreamStatus::Active,
            clock,
            last_batch: None,
            rows_in: 0,
            null_time_rows: 0,
        }
    }
}

/// Rows bound for a sink.
pub type SinkBatch = (usize, RecordBatch);

/// The streams and pipelines of a project, in dependency order.
pub struct Dataflow {
    /// Sources first, then views, by id.
    pub streams: Vec<StreamState>,
    /// Pipelines in dependency order (a pipeline only reads streams defined before it).
    pub pipelines: Vec<PipelineExec>,
    /// Emit (true) or drop (false) open windows when the input ends.
    pub emit_on_end: bool,
    finished: Vec<bool>,
    last_watermark: Vec<Option<i64>>,
    /// Windows emitted per pipeline, as last counted into the metrics.
    windows_counted: Vec<u64>,
    sink_out: Vec<SinkBatch>,
    /// Every pipeline's output since the last [`Dataflow::take_outputs`], when kept.
    outputs: Option<Vec<(usize, RecordBatch)>>,
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
    pub fn new(
        mut streams: Vec<StreamState>,
        pipelines: Vec<PipelineExec>,
        emit_on_end: bool,
    ) -> Self {
        for (p, pipe) in pipelines.iter().enumerate() {
            for (b, branch) in pipe.branches.iter().enumerate() {
                streams[branch.stream].readers.push((p, b));
            }
        }
        let n = pipelines.len();
        Self {
            streams,
            pipelines,
            emit_on_end,
            finished: vec![false; n],
            last_watermark: vec![None; n],
            windows_counted: vec![0; n],
            sink_out: Vec::new(),
            outputs: None,
        }
    }

    /// From now on keeps every pipeline's output rows for [`Dataflow::take_outputs`].
    pub fn keep_outputs(&mut self) {
        self.outputs.get_or_insert_with(Vec::new);
    }

    /// Output rows of pipelines (by index) since the last call, if kept.
    pub fn take_outputs(&mut self) -> Vec<(usize, RecordBatch)> {
        self.outputs
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// True once pipeline `p` has seen the end of all its inputs.
    pub fn is_pipeline_finished(&self, p: usize) -> bool {
        self.finished[p]
    }

    /// The watermark pipeline `p` last closed windows up to.
    pub fn watermark(&self, p: usize) -> Option<i64> {
        self.last_watermark[p]
    }

    /// A batch from source stream `stream`; returns rows for the sinks.
    pub fn on_batch(&mut self, stream: usize, batch: RecordBatch, now: Instant) -> Vec<SinkBatch> {
        let batch = self.admit(stream, batch, now);
        if batch.num_rows() > 0 {
            self.deliver(stream, batch);
        }
        self.propagate();
        std::mem::take(&mut self.sink_out)
    }

    /// Source stream `stream` has ended.
    pub fn on_source_end(&mut self, stream: usize) -> Vec<SinkBatch> {
        self.streams[stream].status = StreamStatus::Finished;
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
        std::mem::take(&mut self.sink_out)
    }

    /// True when every pipeline has finished.
    pub fn is_finished(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }

    /// Source bookkeeping: drops rows without event time, tracks the largest event time.
    fn admit(&mut self, stream: usize, batch: RecordBatch, now: Instant) -> RecordBatch {
        let s = &mut self.streams[stream];
        if s.status == StreamStatus::Idle {
            info!(source = %s.name, "source active again");
        }
        s.status = StreamStatus::Active;
        s.last_batch = Some(now);
        let Some(clock) = &mut s.clock else {
            s.rows_in += batch.num_rows() as u64;
            return batch;
        };
        let col = batch.column(clock.event_time);
        let batch = if col.null_count() > 0 {
            let dropped = col.null_count() as u64;
            s.null_time_rows += dropped;
            metrics::counter!("weir_source_rows_dropped_total", "source" => s.name.clone(), "reason" => "null_event_time")
                .increment(dropped);
            warn!(source = %s.name, rows = dropped, "rows without event time dropped");
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
        s.rows_in += batch.num_rows() as u64;
        metrics::counter!("weir_source_rows_total", "source" => s.name.clone())
            .increment(batch.num_rows() as u64);
        batch
    }

    fn deliver(&mut self, stream: usize, batch: RecordBatch) {
        let readers = self.streams[stream].readers.clone();
        for (p, b) in readers {
            if self.finished[p] {
                continue;
            }
            metrics::counter!("weir_pipeline_rows_in_total", "pipeline" => self.pipelines[p].name.clone())
                .increment(batch.num_rows() as u64);
            let late_before = self.pipelines[p].window_stats().late_rows;
            let result = self.pipelines[p].process(b, batch.clone());
            let late = self.pipelines[p].window_stats().late_rows - late_before;
            if late > 0 {
                metrics::counter!("weir_late_rows_total", "pipeline" => self.pipelines[p].name.clone())
                    .increment(late);
            }
            self.route(p, result);
        }
    }

    fn route(&mut self, p: usize, result: datafusion::common::Result<Vec<RecordBatch>>) {
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let pipe = &mut self.pipelines[p];
                pipe.errors += 1;
                metrics::counter!("weir_pipeline_errors_total", "pipeline" => pipe.name.clone())
                    .increment(1);
                warn!(pipeline = %pipe.name, error = %e, "batch dropped: evaluating it failed");
                return;
            }
        };
        self.record_emitted(p, &out);
        let target = self.pipelines[p].target;
        for b in out {
            metrics::counter!("weir_pipeline_rows_out_total", "pipeline" => self.pipelines[p].name.clone())
                .increment(b.num_rows() as u64);
            if let Some(kept) = &mut self.outputs {
                kept.push((p, b.clone()));
            }
            match target {
                Target::Sink(k) => self.sink_out.push((k, b)),
                Target::Stream(s) => {
                    self.streams[s].rows_in += b.num_rows() as u64;
                    self.deliver(s, b);
                }
            }
        }
    }

    /// Counts windows `p` emitted since the last call and how long after their end (by the
    /// wall clock) `out` leaves.
    fn record_emitted(&mut self, p: usize, out: &[RecordBatch]) {
        let pipe = &self.pipelines[p];
        let emitted = pipe.window_stats().windows_emitted;
        let new = emitted.saturating_sub(self.windows_counted[p]);
        self.windows_counted[p] = emitted;
        if new == 0 {
            return;
        }
        metrics::counter!("weir_pipeline_windows_total", "pipeline" => pipe.name.clone())
            .increment(new);
        let Some(col) = pipe.window.as_ref().and_then(|w| w.out_end) else {
            return;
        };
        let now = crate::clock::now_nanos();
        let delay =
            metrics::histogram!("weir_window_emit_delay_seconds", "pipeline" => pipe.name.clone());
        for b in out {
            let ends = b.column(col).as_primitive_opt::<TimestampNanosecondType>();
            if let Some(end) = ends.and_then(arrow::compute::min) {
                delay.record(now.saturating_sub(end).max(0) as f64 / 1e9);
            }
        }
    }

    /// Sets each windowed pipeline's watermark lag (wall clock minus watermark).
    fn record_watermark_lag(&self) {
        let now = crate::clock::now_nanos();
        for (pipe, w) in self.pipelines.iter().zip(&self.last_watermark) {
            if let (Some(_), Some(w)) = (&pipe.window, w) {
                metrics::gauge!("weir_watermark_lag_seconds", "pipeline" => pipe.name.clone())
                    .set(now.saturating_sub(*w) as f64 / 1e9);
            }
        }
    }

    fn contribution(&self, stream: usize, col: usize) -> Contribution {
        let s = &self.streams[stream];
        let wm = s.watermarks.get(&col).copied();
        match s.status {
            StreamStatus::Active => Contribution::Holds(wm),
            StreamStatus::Idle | StreamStatus::Finished => Contribution::Excluded(wm),
        }
    }

    /// The watermark over inputs `(stream, column)`: the minimum over inputs that hold it
    /// back; when all are idle, the largest of theirs.
    fn combined(&self, inputs: impl Iterator<Item = (usize, usize)>) -> Option<i64> {
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
        for p in 0..self.pipelines.len() {
            if self.finished[p] {
                continue;
            }
            let all_finished = self.pipelines[p]
                .branches
                .iter()
                .all(|b| self.streams[b.stream].status == StreamStatus::Finished);
            if all_finished {
                let emit = self.emit_on_end;
                let result = self.pipelines[p].finish(emit);
                self.route(p, result);
                self.finished[p] = true;
                if let Target::Stream(s) = self.pipelines[p].target {
                    self.streams[s].status = StreamStatus::Finished;
                }
                continue;
            }
            if let Some(win) = &self.pipelines[p].window {
                let inputs: Vec<(usize, usize)> = self.pipelines[p]
                    .branches
                    .iter()
                    .zip(&win.time_col)
                    .map(|(b, &c)| (b.stream, c))
                    .collect();
                let w = self.combined(inputs.into_iter());
                if let Some(w) = w
                    && self.last_watermark[p].is_none_or(|last| w > last)
                {
                    self.last_watermark[p] = Some(w);
                    let result = self.pipelines[p].advance(w);
                    self.route(p, result);
                }
            }
            self.update_output_watermarks(p);
        }
    }

    fn update_output_watermarks(&mut self, p: usize) {
        let Target::Stream(out) = self.pipelines[p].target else {
            return;
        };
        let pipe = &self.pipelines[p];
        let mut marks = Vec::new();
        match &pipe.window {
            Some(win) => {
                if let (Some(col), Some(w)) = (win.out_end, self.last_watermark[p]) {
                    marks.push((col, w));
                }
                if let (Some(col), Some(lb)) = (win.out_start, win.op.start_lower_bound()) {
                    marks.push((col, lb.saturating_sub(1)));
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
        for (col, w) in marks {
            self.streams[out].watermarks.insert(col, w);
        }
    }
}
