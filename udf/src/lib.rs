//! Predictive-maintenance SQL functions for Weir, registered into every pipeline's
//! DataFusion context. Aggregates keep mergeable partial state, so they work in streaming
//! windows and in DataFusion's two-phase aggregation alike.

pub mod across_windows;
mod arrays;
pub mod bounded;
pub mod constants;
pub mod interpolate;
pub mod iso10816;
pub mod moment_functions;
pub mod moments;
pub mod spectral;
pub mod trend;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::prelude::SessionContext;

use across_windows::{RunningFunction, RunningKind};
use moment_functions::{MomentFunction, MomentKind};
use spectral::{SpectralFunction, SpectralKind};
use trend::{TrendFunction, TrendKind};

/// A function this crate adds, for `weir functions`.
#[derive(Debug, Clone, Copy)]
pub struct FunctionDoc {
    /// SQL call form.
    pub name: &'static str,
    /// One-line description with units.
    pub description: &'static str,
}

const OTHERS: [FunctionDoc; 7] = [
    FunctionDoc {
        name: "trend_slope(ts, value)",
        description: "least-squares slope of value over time, in value units per second",
    },
    FunctionDoc {
        name: "time_to_threshold(ts, value, threshold)",
        description: "seconds until the least-squares trend reaches threshold (null if flat or not approaching it)",
    },
    FunctionDoc {
        name: "ewma(value, alpha) OVER (PARTITION BY key ORDER BY window_end)",
        description: "exponentially weighted moving average across windows, per key (alpha in (0, 1])",
    },
    FunctionDoc {
        name: "zscore(value, n) OVER (PARTITION BY key ORDER BY window_end)",
        description: "standard score of value against the previous n windows of its key (null until 2 exist)",
    },
    FunctionDoc {
        name: "locf(value) OVER (PARTITION BY key ORDER BY window_end)",
        description: "last observation carried forward: value, or the last non-null value of its key (with fill_keys: a silent window shows the last known value)",
    },
    FunctionDoc {
        name: "interpolate(value, time, max_gap) OVER (PARTITION BY key ORDER BY time)",
        description: "a null value between two known values of its key at most max_gap apart: the straight line between them by time (streaming: the gap's rows wait for the value after it)",
    },
    FunctionDoc {
        name: "iso10816_zone(rms_velocity_mm_s, machine_class)",
        description: "ISO 10816-3 zone 'A'..'D' for group1_rigid, group1_flexible, group2_rigid or group2_flexible",
    },
];

/// Every function this crate registers, with its description.
pub fn functions() -> Vec<FunctionDoc> {
    MomentKind::ALL
        .iter()
        .map(|(_, name, description)| FunctionDoc { name, description })
        .chain(
            SpectralKind::ALL
                .iter()
                .map(|(_, name, description)| FunctionDoc { name, description }),
        )
        .chain(OTHERS)
        .collect()
}

/// Registers every function of this crate into `ctx`.
pub fn register(ctx: &SessionContext) {
    for (kind, name, _) in MomentKind::ALL {
        ctx.register_udaf(AggregateUDF::from(MomentFunction::new(kind, name)));
    }
    for (kind, _, _) in SpectralKind::ALL {
        ctx.register_udaf(AggregateUDF::from(SpectralFunction::new(kind)));
    }
    for kind in [TrendKind::Slope, TrendKind::TimeToThreshold] {
        ctx.register_udaf(AggregateUDF::from(TrendFunction::new(kind)));
    }
    for kind in [RunningKind::Ewma, RunningKind::Zscore, RunningKind::Locf] {
        ctx.register_udwf(WindowUDF::from(RunningFunction::new(kind)));
    }
    ctx.register_udwf(WindowUDF::from(interpolate::Interpolate::default()));
    ctx.register_udf(ScalarUDF::from(iso10816::Iso10816Zone::default()));
    bounded::register(ctx);
}
