//! What a run reports when it ends: every source's, pipeline's and sink's counters, read from
//! their telemetry.

use std::time::Duration;

use crate::observe::telemetry::{
    CheckpointCounts, PipelineCounts, SinkCounts, SourceCounts, TableCounts,
};

/// What happened during a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// Until every source had ended and its rows had gone through the pipelines (the rest
    /// of `elapsed` is the sinks flushing and closing).
    pub processing: Duration,
    /// Per source.
    pub sources: Vec<SourceSummary>,
    /// Per pipeline.
    pub pipelines: Vec<PipelineSummary>,
    /// Per sink.
    pub sinks: Vec<SinkSummary>,
    /// Sources that failed, with their error.
    pub failed_sources: Vec<(String, String)>,
    /// Checkpoints taken and restored, with `--state-dir`.
    pub checkpoints: Option<CheckpointCounts>,
    /// Sinks that could not start, with their error: nothing was started.
    pub failed_sinks: Vec<(String, String)>,
    /// Reference tables: name and counters.
    pub tables: Vec<(String, TableCounts)>,
}

/// One source's counters.
#[derive(Debug, Clone, Default)]
pub struct SourceSummary {
    /// Source name.
    pub name: String,
    /// Rows, rows without event time, skipped inputs.
    pub counts: SourceCounts,
}

/// One pipeline's counters.
#[derive(Debug, Clone, Default)]
pub struct PipelineSummary {
    /// View or sink name.
    pub name: String,
    /// Rows in and out, windows, late rows, failed batches.
    pub counts: PipelineCounts,
}

/// One sink's counters.
#[derive(Debug, Clone, Default)]
pub struct SinkSummary {
    /// Sink name.
    pub name: String,
    /// Rows, failures, uploads, spill buffer, rows lost.
    pub counts: SinkCounts,
}

impl Summary {
    /// Rows read by all sources.
    pub fn rows_in(&self) -> u64 {
        self.sources.iter().map(|s| s.counts.rows).sum()
    }

    /// Failed sink writes and closes.
    pub fn sink_errors(&self) -> u64 {
        self.sinks.iter().map(|s| s.counts.failures).sum()
    }

    /// Rows sinks counted as lost (dropped or unspillable files).
    pub fn sink_rows_lost(&self) -> u64 {
        self.sinks.iter().map(|s| s.counts.dropped_rows).sum()
    }

    /// True when a sink lost output: a write failed, or rows were dropped.
    pub fn sinks_lost_output(&self) -> bool {
        self.sink_errors() > 0 || self.sink_rows_lost() > 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "weir: finished in {:.2}s — {} rows in ({:.0} rows/s)",
            secs,
            self.rows_in(),
            self.rows_in() as f64 / secs
        )?;
        for s in &self.sources {
            let c = &s.counts;
            write!(f, "  source {}: {} rows", s.name, c.rows)?;
            if c.null_time_rows > 0 {
                write!(f, ", {} dropped (no event time)", c.null_time_rows)?;
            }
            if !c.skipped.is_empty() {
                let reasons: Vec<String> =
                    c.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
                write!(
                    f,
                    ", {} inputs skipped ({})",
                    c.skipped_total(),
                    reasons.join(", ")
                )?;
            }
            writeln!(f)?;
        }
        for p in &self.pipelines {
            let c = &p.counts;
            write!(
                f,
                "  pipeline {}: {} rows in, {} rows out, {} windows emitted, {} late rows dropped",
                p.name, c.rows_in, c.rows_out, c.windows_emitted, c.late_rows
            )?;
            if !c.row_errors.is_empty() {
                let reasons: Vec<String> = c
                    .row_errors
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect();
                write!(
                    f,
                    ", {} rows dropped for evaluation errors ({})",
                    c.row_errors_total(),
                    reasons.join(", ")
                )?;
            }
            if c.errors > 0 {
                write!(f, ", {} failed batches", c.errors)?;
            }
            if c.windows_emitted_early > 0 {
                write!(
                    f,
                    ", {} windows emitted early (state budget reached)",
                    c.windows_emitted_early
                )?;
            }
            if c.refused_rows > 0 {
                write!(
                    f,
                    ", {} rows of new keys dropped (state budget reached)",
                    c.refused_rows
                )?;
            }
            if c.join_unmatched_rows > 0 {
                write!(
                    f,
                    ", {} rows without a match in a joined table dropped",
                    c.join_unmatched_rows
                )?;
            }
            if c.state_failed {
                write!(f, ", FAILED: state budget reached (state_policy fail)")?;
            }
            if c.latest_evicted > 0 || c.latest_dropped_rows > 0 {
                write!(
                    f,
                    ", latest table: {} keys evicted, {} rows not taken",
                    c.latest_evicted, c.latest_dropped_rows
                )?;
            }
            writeln!(f)?;
        }
        for (name, c) in &self.tables {
            write!(f, "  table {name}: {} rows, version {}", c.rows, c.version)?;
            if c.failed_loads > 0 {
                write!(f, ", {} reloads failed (version kept)", c.failed_loads)?;
            }
            writeln!(f)?;
        }
        for (name, e) in &self.failed_sources {
            writeln!(f, "  source {name} FAILED: {e}")?;
        }
        for (name, e) in &self.failed_sinks {
            writeln!(f, "  sink {name} could not start: {e}")?;
        }
        for sink in &self.sinks {
            let c = &sink.counts;
            if c.quarantined > 0 || c.quarantine_deleted > 0 {
                writeln!(
                    f,
                    "  sink {}: {} spill files quarantined, {} quarantined files deleted",
                    sink.name, c.quarantined, c.quarantine_deleted
                )?;
            }
            if !c.writes.is_empty() {
                let results: Vec<String> =
                    c.writes.iter().map(|(r, n)| format!("{r} {n}")).collect();
                writeln!(
                    f,
                    "  sink {}: values to machines: {}",
                    sink.name,
                    results.join(", ")
                )?;
            }
        }
        if let Some(c) = &self.checkpoints {
            if let Some(r) = &c.restored {
                write!(
                    f,
                    "  restored checkpoint {} ({:.1}s old): {} open windows, {} groups",
                    r.number,
                    r.age.as_secs_f64(),
                    r.windows,
                    r.groups
                )?;
                if !r.changed.is_empty() {
                    write!(f, "; started empty (changed): {}", r.changed.join(", "))?;
                }
                writeln!(f)?;
            }
            write!(f, "  checkpoints: {} taken", c.taken)?;
            if c.taken > 0 {
                write!(
                    f,
                    ", the last {} bytes in {:.1} ms",
                    c.last_bytes,
                    c.last_duration.as_secs_f64() * 1e3
                )?;
            }
            if c.failed > 0 {
                write!(f, ", {} failed", c.failed)?;
            }
            writeln!(f)?;
        }
        if self.sink_errors() > 0 {
            writeln!(f, "  sink write failures: {}", self.sink_errors())?;
        }
        if self.sink_rows_lost() > 0 {
            writeln!(f, "  sink rows lost: {}", self.sink_rows_lost())?;
        }
        Ok(())
    }
}
