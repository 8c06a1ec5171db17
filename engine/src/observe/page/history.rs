//! The operator page's charts: rates and lags of every source, pipeline and sink and the
//! process, sampled once a second from the live snapshot and kept for the last
//! [`SAMPLES`] seconds (bounded: a fixed number of values per series).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

use crate::clock::now_nanos;
use crate::live::Snapshot;
use crate::observe::process;

/// Samples kept: one a second, for ten minutes.
pub const SAMPLES: usize = 600;

/// The values of one series, oldest first, aligned with [`History::times`] (`NaN`: no value
/// then, such as before a pipeline started).
type Series = VecDeque<f32>;

/// The series of one source, pipeline or sink, by name.
#[derive(Debug, Default, Serialize)]
pub struct Part {
    #[serde(flatten)]
    series: BTreeMap<&'static str, Series>,
}

/// The last counters of a part, to turn them into rates.
#[derive(Debug, Clone, Copy, Default)]
struct Counters([u64; 3]);

/// What a part of the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartKind {
    /// A source: its rates are rows.
    Source,
    /// A view or insert: rows in, rows out, late rows.
    Pipeline,
    /// A sink: rows.
    Sink,
}

/// A part's counters by kind and name.
type ByPart<T> = BTreeMap<(PartKind, String), T>;

/// The previous sample's counters, to turn the next one's into rates.
#[derive(Debug)]
struct LastSample {
    at: Instant,
    cpu_seconds: f64,
    counters: ByPart<Counters>,
}

/// Samples of the last [`SAMPLES`] seconds.
#[derive(Debug, Default, Serialize)]
pub struct History {
    /// When each sample was taken, ms since the epoch.
    times: VecDeque<i64>,
    sources: BTreeMap<String, Part>,
    pipelines: BTreeMap<String, Part>,
    sinks: BTreeMap<String, Part>,
    process: Part,
    #[serde(skip)]
    last: Option<LastSample>,
    /// Each part's newest rates.
    #[serde(skip)]
    rates: ByPart<[f64; 3]>,
    #[serde(skip)]
    cpu_percent: Option<f64>,
}

/// A part's newest values: what the status endpoint shows as rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Per second: rows (sources, sinks) or rows in, rows out and late rows (pipelines).
    pub per_second: [f64; 3],
}

impl History {
    /// Adds a sample of `snap` (counters read from the parts' telemetry now).
    pub fn sample(&mut self, snap: &Snapshot) {
        let now = Instant::now();
        let wall = now_nanos();
        let cpu = process::cpu_seconds();
        let mut counters = BTreeMap::new();
        for s in &snap.sources {
            let c = s
                .telemetry
                .as_ref()
                .map_or(s.counts.rows, |t| t.counts().rows);
            counters.insert((PartKind::Source, s.name.clone()), Counters([c, 0, 0]));
        }
        for p in &snap.pipelines {
            let c = p
                .telemetry
                .as_ref()
                .map_or_else(|| p.counts.clone(), |t| t.counts());
            counters.insert(
                (PartKind::Pipeline, p.name.clone()),
                Counters([c.rows_in, c.rows_out, c.late_rows]),
            );
        }
        for k in &snap.sinks {
            let c = k.counts_now();
            counters.insert((PartKind::Sink, k.name.clone()), Counters([c.rows, 0, 0]));
        }
        let (elapsed, before, cpu_before) = match self.last.take() {
            Some(last) => (
                now.duration_since(last.at).as_secs_f64(),
                last.counters,
                Some(last.cpu_seconds),
            ),
            None => (0.0, BTreeMap::new(), None),
        };
        self.rates = counters
            .iter()
            .map(|(k, c)| {
                let r = match before.get(k) {
                    Some(b) if elapsed > 0.0 => {
                        std::array::from_fn(|i| c.0[i].saturating_sub(b.0[i]) as f64 / elapsed)
                    }
                    _ => [f64::NAN; 3],
                };
                (k.clone(), r)
            })
            .collect();
        self.cpu_percent = match (cpu, cpu_before) {
            (Some(c), Some(b)) if elapsed > 0.0 => Some((c - b).max(0.0) / elapsed * 100.0),
            _ => None,
        };
        self.last = Some(LastSample {
            at: now,
            cpu_seconds: cpu.unwrap_or(0.0),
            counters,
        });

        if self.times.len() == SAMPLES {
            self.times.pop_front();
        }
        self.times.push_back(wall / 1_000_000);
        let len = self.times.len();
        let lag = |w: Option<i64>| w.map_or(f64::NAN, |w| (wall - w) as f64 / 1e9);
        let rate = |kind: PartKind, name: &str, i: usize| {
            self.rates
                .get(&(kind, name.to_string()))
                .map_or(f64::NAN, |r| r[i])
        };
        let mut sources = BTreeMap::new();
        for s in &snap.sources {
            sources.insert(
                s.name.clone(),
                vec![
                    ("rows_per_second", rate(PartKind::Source, &s.name, 0)),
                    ("watermark_lag_seconds", lag(s.watermark)),
                ],
            );
        }
        let mut pipelines = BTreeMap::new();
        for p in &snap.pipelines {
            pipelines.insert(
                p.name.clone(),
                vec![
                    ("rows_in_per_second", rate(PartKind::Pipeline, &p.name, 0)),
                    ("rows_out_per_second", rate(PartKind::Pipeline, &p.name, 1)),
                    ("late_rows_per_second", rate(PartKind::Pipeline, &p.name, 2)),
                    ("watermark_lag_seconds", lag(p.watermark)),
                ],
            );
        }
        let mut sinks = BTreeMap::new();
        for k in &snap.sinks {
            let c = k.counts_now();
            sinks.insert(
                k.name.clone(),
                vec![
                    ("rows_per_second", rate(PartKind::Sink, &k.name, 0)),
                    ("spill_bytes", c.spill_bytes as f64),
                ],
            );
        }
        let rss = process::memory().map_or(f64::NAN, |(rss, _)| rss as f64);
        let process = vec![
            ("rss_bytes", rss),
            ("cpu_percent", self.cpu_percent.unwrap_or(f64::NAN)),
        ];
        record(&mut self.sources, sources, len);
        record(&mut self.pipelines, pipelines, len);
        record(&mut self.sinks, sinks, len);
        push(&mut self.process, &process, len);
    }

    /// The newest rates of a part (`None` before its second sample).
    pub fn rates(&self, kind: PartKind, name: &str) -> Option<Rates> {
        self.rates
            .get(&(kind, name.to_string()))
            .filter(|r| !r[0].is_nan())
            .map(|r| Rates { per_second: *r })
    }

    /// The process's CPU use over the last second, in percent of one core.
    pub fn cpu_percent(&self) -> Option<f64> {
        self.cpu_percent
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True before the first sample.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Approximate bytes the samples take (their values; the fixed bookkeeping aside).
    pub fn bytes(&self) -> usize {
        let values: usize = [&self.sources, &self.pipelines, &self.sinks]
            .iter()
            .flat_map(|m| m.iter())
            .map(|(name, part)| {
                name.len()
                    + part
                        .series
                        .values()
                        .map(|s| s.capacity() * size_of::<f32>())
                        .sum::<usize>()
            })
            .sum();
        let process: usize = self
            .process
            .series
            .values()
            .map(|s| s.capacity() * size_of::<f32>())
            .sum();
        self.times.capacity() * size_of::<i64>() + values + process
    }
}

/// Appends this sample's values to the parts present in it; parts no longer present (a
/// reload) are dropped, new ones start with `NaN` for the earlier samples.
fn record(
    parts: &mut BTreeMap<String, Part>,
    now: BTreeMap<String, Vec<(&'static str, f64)>>,
    len: usize,
) {
    parts.retain(|name, _| now.contains_key(name));
    for (name, values) in now {
        push(parts.entry(name).or_default(), &values, len);
    }
}

/// Appends `values` to `part`'s series, keeping each at `len` values (the times' length).
fn push(part: &mut Part, values: &[(&'static str, f64)], len: usize) {
    for &(key, v) in values {
        let s = part
            .series
            .entry(key)
            .or_insert_with(|| VecDeque::with_capacity(SAMPLES));
        s.push_back(v as f32);
        while s.len() > len {
            s.pop_front();
        }
        while s.len() < len {
            s.push_front(f32::NAN);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::live::snapshot::{SinkStatus, SourceStatus};
    use crate::observe::telemetry::{SinkTelemetry, SourceTelemetry};

    #[test]
    fn rates_are_differences_over_time_and_the_samples_are_bounded() {
        let src = Arc::new(SourceTelemetry::new("gen"));
        let sink = Arc::new(SinkTelemetry::new("cloud"));
        let snap = Snapshot {
            sources: vec![SourceStatus {
                name: "gen".into(),
                watermark: Some(now_nanos() - 2_000_000_000),
                telemetry: Some(Arc::clone(&src)),
                ..Default::default()
            }],
            sinks: vec![SinkStatus {
                name: "cloud".into(),
                telemetry: Some(Arc::clone(&sink)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut h = History::default();
        h.sample(&snap);
        assert_eq!(
            h.rates(PartKind::Source, "gen"),
            None,
            "no rate from one sample"
        );
        src.rows(500);
        sink.spill(1, 4096, 1.0);
        std::thread::sleep(std::time::Duration::from_millis(100));
        h.sample(&snap);
        let r = h.rates(PartKind::Source, "gen").unwrap().per_second[0];
        assert!((2000.0..=5000.0).contains(&r), "500 rows in ~0.1 s: {r}");
        let lag = h.sources["gen"].series["watermark_lag_seconds"][1];
        assert!((2.0..3.0).contains(&lag), "{lag}");
        assert_eq!(h.sinks["cloud"].series["spill_bytes"][1], 4096.0);
        for _ in 0..SAMPLES + 10 {
            h.sample(&snap);
        }
        assert_eq!(h.len(), SAMPLES);
        assert!(h.sinks["cloud"].series.values().all(|s| s.len() == SAMPLES));
        let bytes = h.bytes();
        assert!(bytes < 64 * 1024, "{bytes}");
        // a reload: the sink is gone, a new source starts with no earlier values
        let reloaded = Snapshot {
            sources: vec![SourceStatus {
                name: "mqtt".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        h.sample(&reloaded);
        assert!(h.sinks.is_empty() && !h.sources.contains_key("gen"));
        let rows = &h.sources["mqtt"].series["rows_per_second"];
        assert_eq!(rows.len(), SAMPLES);
        assert!(rows.iter().all(|v| v.is_nan()));
    }
}
