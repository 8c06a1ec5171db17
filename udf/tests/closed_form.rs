//! Moment functions against closed-form values of known signals, and the partial-state merge
//! (many batches, several partitions) against one pass.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::f64::consts::{PI, SQRT_2};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::prelude::SessionContext;

mod common;

use common::{close, moment_calls, moment_names};

/// A context with table `t(k, ts, v)`: keys `g`, values `v`, in `parts` partitions of
/// batches of `batch` rows.
async fn context(g: &[i64], v: &[f64], batch: usize, parts: usize) -> SessionContext {
    let ts: Vec<f64> = (0..v.len()).map(|i| i as f64).collect();
    common::table(g, &ts, v, batch, parts.max(1)).await
}

async fn values(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
    let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let b = &b[0];
    (0..b.num_columns())
        .map(|c| {
            let a = b.column(c).as_primitive::<Float64Type>();
            (!a.is_null(0)).then(|| a.value(0))
        })
        .collect()
}

fn sine(amplitude: f64, n: usize) -> Vec<f64> {
    // whole periods sampled evenly: the discrete moments equal the continuous ones
    (0..n)
        .map(|i| amplitude * (2.0 * PI * 5.0 * i as f64 / n as f64).sin())
        .collect()
}

#[tokio::test]
async fn sine_has_its_textbook_statistics() {
    let a = 3.0;
    let v = sine(a, 4000);
    let ctx = context(&vec![0; v.len()], &v, 4000, 1).await;
    let sql = format!("SELECT {} FROM t", moment_calls());
    let got = values(&ctx, &sql).await;
    let peak = v.iter().fold(0f64, |m, x| m.max(x.abs()));
    let expected = [
        a / SQRT_2,                    // rms
        2.0 * peak,                    // peak_to_peak (2A, up to sampling of the crest)
        peak / (a / SQRT_2),           // crest factor √2
        1.5,                           // kurtosis
        -1.5,                          // excess kurtosis
        0.0,                           // skewness
        2.0 * a / PI,                  // mean |x|
        (a / SQRT_2) / (2.0 * a / PI), // shape factor π/(2√2)
        peak / (2.0 * a / PI),         // impulse factor π/2
    ];
    for ((f, g), e) in moment_names().iter().zip(&got).zip(expected) {
        let g = g.unwrap();
        // mean |x| of evenly sampled periods approaches 2A/π (to ~1e-5 at 800 samples per
        // period); the even moments are exact for whole periods
        let tol = if f.contains("abs") || f.contains("factor") && *f != "crest_factor" {
            1e-4
        } else {
            1e-9
        };
        assert!(close(g, e, tol), "{f}: got {g}, expected {e}");
    }
    assert!(close(peak, a, 1e-12), "the crest is sampled");
    assert!(close(got[2].unwrap(), SQRT_2, 1e-9));
}

#[tokio::test]
async fn split_into_many_batches_and_partitions_equals_one_batch() {
    // groups with a large offset (temperature-like) to stress numerical merging
    let n = 20_000;
    let g: Vec<i64> = (0..n).map(|i| (i % 7) as i64).collect();
    let v: Vec<f64> = (0..n)
        .map(|i| 60.0 + (i as f64 * 0.37).sin() * 0.5 + ((i * 7919 % 1000) as f64 - 500.0) * 1e-3)
        .collect();
    let sql = format!("SELECT {} FROM t WHERE k = 3", moment_calls());
    let one = values(&context(&g, &v, n, 1).await, &sql).await;
    let many = values(&context(&g, &v, 37, 4).await, &sql).await;
    for ((f, a), b) in moment_names().iter().zip(&one).zip(&many) {
        assert!(
            close(a.unwrap(), b.unwrap(), 1e-9),
            "{f}: one batch {a:?}, many {b:?}"
        );
    }
    let sql = format!("SELECT k, {} FROM t GROUP BY k ORDER BY k", moment_calls());
    let grouped = |batch: usize, parts: usize| {
        let (g, v, sql) = (&g, &v, &sql);
        async move {
            let ctx = context(g, v, batch, parts).await;
            ctx.sql(sql).await.unwrap().collect().await.unwrap()
        }
    };
    let (a, b) = (grouped(n, 1).await, grouped(53, 3).await);
    let (a, b) = (&a[0], &b[0]);
    for c in 1..a.num_columns() {
        for r in 0..a.num_rows() {
            let (x, y) = (
                a.column(c).as_primitive::<Float64Type>().value(r),
                b.column(c).as_primitive::<Float64Type>().value(r),
            );
            assert!(
                close(x, y, 1e-9),
                "{}: group {r}: {x} vs {y}",
                moment_names()[c - 1]
            );
        }
    }
}

#[tokio::test]
async fn nulls_are_skipped_and_empty_input_is_null() {
    let ctx = SessionContext::new();
    weir_udf::register(&ctx);
    let sql = format!(
        "SELECT {} FROM (VALUES (CAST(NULL AS DOUBLE)), (3.0), (NULL), (-4.0)) AS x(v)",
        moment_calls()
    );
    let got = values(&ctx, &sql).await;
    assert!(
        close(got[0].unwrap(), (12.5f64).sqrt(), 1e-12),
        "rms over 3 and -4 only"
    );
    assert!(close(got[1].unwrap(), 7.0, 1e-12));
    let sql = format!(
        "SELECT {} FROM (VALUES (1.0)) AS x(v) WHERE v > 5",
        moment_calls()
    );
    assert!(
        values(&ctx, &sql).await.iter().all(Option::is_none),
        "no rows: null"
    );
    // a constant: no spread, so kurtosis and skewness are undefined
    let sql = "SELECT kurtosis(v), skewness(v), rms(v) FROM (VALUES (2.0), (2.0)) AS x(v)";
    assert_eq!(values(&ctx, sql).await, vec![None, None, Some(2.0)]);
}

/// `amplitude · sin(2π f t)` for each `(amplitude, f)`, summed, at `rate` Hz for `n` samples.
fn tones(parts: &[(f64, f64)], rate: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            parts
                .iter()
                .map(|(a, f)| a * (2.0 * PI * f * t).sin())
                .sum()
        })
        .collect()
}

#[tokio::test]
async fn spectra_of_tones_have_their_textbook_power() {
    // 1 s at 1 kHz: every tone completes whole periods, so each falls on one spectral line
    let v = tones(&[(3.0, 120.0), (0.5, 37.0)], 1000.0, 1000);
    // scrambled arrival order: ORDER BY ts restores time order
    let perm: Vec<usize> = (0..v.len()).map(|i| i * 389 % v.len()).collect();
    let ts: Vec<f64> = perm.iter().map(|&i| i as f64 / 1000.0).collect();
    let vs: Vec<f64> = perm.iter().map(|&i| v[i]).collect();
    let ctx = common::table(&vec![0; v.len()], &ts, &vs, 97, 3).await;
    let got = values(
        &ctx,
        "SELECT band_energy(v, 1000, 110, 130 ORDER BY ts), band_energy(v, 1000, 30, 40 ORDER BY ts), \
                band_energy(v, 1000, 0, 500 ORDER BY ts), band_energy(v, 1000, 200, 500 ORDER BY ts), \
                dominant_frequency(v, 1000 ORDER BY ts) FROM t",
    )
    .await;
    let tone_power = |a: f64| a * a / 2.0;
    assert!(close(got[0].unwrap(), tone_power(3.0), 1e-9), "{got:?}");
    assert!(close(got[1].unwrap(), tone_power(0.5), 1e-9), "{got:?}");
    assert!(
        close(got[2].unwrap(), tone_power(3.0) + tone_power(0.5), 1e-9),
        "whole band = mean square: {got:?}"
    );
    assert!(got[3].unwrap() < 1e-20, "no power above 200 Hz: {got:?}");
    assert!(close(got[4].unwrap(), 120.0, 1e-12), "{got:?}");
}

#[tokio::test]
async fn spectra_are_per_group_and_independent_of_batching() {
    // group k has a tone at 10·(k+1) Hz, rows of all groups interleaved
    let (groups, n) = (4usize, 800usize);
    let per_group: Vec<Vec<f64>> = (0..groups)
        .map(|k| tones(&[(1.0 + k as f64, 10.0 * (k + 1) as f64)], 200.0, n))
        .collect();
    let mut g = vec![];
    let (mut ts, mut v) = (vec![], vec![]);
    for i in 0..n {
        for (k, series) in per_group.iter().enumerate() {
            g.push(k as i64);
            ts.push(i as f64 / 200.0);
            v.push(series[i]);
        }
    }
    let sql = "SELECT k, dominant_frequency(v, 200 ORDER BY ts), \
               band_energy(v, 200, 5, 45 ORDER BY ts) FROM t GROUP BY k ORDER BY k";
    for (batch, parts) in [(g.len(), 1), (53, 3)] {
        let ctx = common::table(&g, &ts, &v, batch, parts).await;
        let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let b = datafusion::arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
        assert_eq!(b.num_rows(), groups);
        for k in 0..groups {
            let f = b.column(1).as_primitive::<Float64Type>().value(k);
            let e = b.column(2).as_primitive::<Float64Type>().value(k);
            let a = 1.0 + k as f64;
            assert!(close(f, 10.0 * (k + 1) as f64, 1e-12), "group {k}: {f} Hz");
            assert!(close(e, a * a / 2.0, 1e-9), "group {k}: band energy {e}");
        }
    }
}

#[tokio::test]
async fn spectra_of_constants_and_bad_rates() {
    let ctx = SessionContext::new();
    weir_udf::register(&ctx);
    let sql = "SELECT dominant_frequency(v, 100), band_energy(v, 100, 0, 0), \
               dominant_frequency(v, 100) FILTER (WHERE v > 5) \
               FROM (VALUES (2.0), (2.0), (2.0), (2.0)) AS x(v)";
    assert_eq!(
        values(&ctx, sql).await,
        vec![None, Some(4.0), None],
        "a constant has only a 0 Hz line, holding its square; no rows gives null"
    );
    let err = ctx
        .sql("SELECT band_energy(v, 0, 1, 2) FROM (VALUES (1.0), (2.0)) AS x(v)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("band_energy: sample_rate_hz must be a positive number"),
        "{err}"
    );
}
