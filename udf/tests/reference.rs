//! Every function against values computed independently: numpy/scipy fixtures
//! (`fixtures/make_fixtures.py` made `fixtures/reference.json`), closed-form signals and
//! the ISO 10816-3 table.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::prelude::SessionContext;
use serde_json::Value;

mod common;

use common::{close, moment_calls, moment_names};

/// Table `t(k, ts, v)` in three partitions of batches of `batch` rows.
async fn table(keys: &[i64], ts_s: &[f64], v: &[f64], batch: usize) -> SessionContext {
    common::table(keys, ts_s, v, batch, 3).await
}

async fn one_row(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
    let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let b = datafusion::arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
    assert_eq!(b.num_rows(), 1, "{sql}");
    (0..b.num_columns())
        .map(|c| {
            let a = datafusion::arrow::compute::cast(b.column(c), &DataType::Float64).unwrap();
            let a = a.as_primitive::<Float64Type>();
            (!a.is_null(0)).then(|| a.value(0))
        })
        .collect()
}

fn fixtures() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference.json"
    ))
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn moment_functions_match_numpy_and_scipy() {
    for case in fixtures() {
        let v = floats(&case["values"]);
        let ts: Vec<f64> = (0..v.len()).map(|i| i as f64).collect();
        let ctx = table(&vec![0; v.len()], &ts, &v, 61).await;
        let sql = format!("SELECT {} FROM t", moment_calls());
        let got = one_row(&ctx, &sql).await;
        for (f, g) in moment_names().iter().zip(got) {
            let want = case[*f].as_f64().unwrap();
            assert!(
                close(g.unwrap(), want, 1e-9),
                "{}: {f} = {g:?}, numpy/scipy {want}",
                case["name"]
            );
        }
    }
}

#[tokio::test]
async fn trend_functions_match_numpy_polyfit() {
    let case = fixtures()
        .into_iter()
        .find(|c| c.get("trend_slope").is_some())
        .unwrap();
    let v = floats(&case["values"]);
    let ts = floats(&case["ts_seconds"]);
    let ctx = table(&vec![0; v.len()], &ts, &v, 17).await;
    let th = case["threshold"].as_f64().unwrap();
    let got = one_row(&ctx, &format!("SELECT trend_slope(ts, v), time_to_threshold(ts, v, {th}), time_to_threshold(ts, v, 0.0) FROM t")).await;
    assert!(
        close(got[0].unwrap(), case["trend_slope"].as_f64().unwrap(), 1e-6),
        "{got:?}"
    );
    assert!(
        close(
            got[1].unwrap(),
            case["time_to_threshold"].as_f64().unwrap(),
            1e-6
        ),
        "{got:?}"
    );
    assert_eq!(
        got[2], None,
        "a rising trend never reaches a threshold below it"
    );
}

#[tokio::test]
async fn spectral_functions_match_numpy_fft() {
    let case = fixtures()
        .into_iter()
        .find(|c| c.get("dominant_frequency").is_some())
        .unwrap();
    let v = floats(&case["values"]);
    let rate = case["sample_rate_hz"].as_f64().unwrap();
    let band = floats(&case["band"]);
    // rows arrive in a scrambled order; ORDER BY ts puts them back
    let order: Vec<usize> = (0..v.len()).map(|i| (i * 211 + 5) % v.len()).collect();
    let ts: Vec<f64> = order.iter().map(|&i| i as f64 / rate).collect();
    let vs: Vec<f64> = order.iter().map(|&i| v[i]).collect();
    let ctx = table(&vec![0; v.len()], &ts, &vs, 29).await;
    let got = one_row(
        &ctx,
        &format!(
            "SELECT band_energy(v, {rate}, {}, {} ORDER BY ts), dominant_frequency(v, {rate} ORDER BY ts) FROM t",
            band[0], band[1]
        ),
    )
    .await;
    let want = case["band_energy"].as_f64().unwrap();
    assert!(
        close(got[0].unwrap(), want, 1e-9),
        "band_energy {got:?}, numpy {want}"
    );
    let want = case["dominant_frequency"].as_f64().unwrap();
    assert!(
        close(got[1].unwrap(), want, 1e-12),
        "dominant_frequency {got:?}, numpy {want}"
    );
}

#[tokio::test]
async fn iso10816_zones_follow_the_table() {
    let ctx = SessionContext::new();
    weir_udf::register(&ctx);
    let cases = [
        (1.0, "group2_rigid", "A"),
        (1.4, "group2_rigid", "B"),
        (2.79, "group2_rigid", "B"),
        (2.8, "group2_rigid", "C"),
        (4.5, "group2_rigid", "D"),
        (4.5, "group2_flexible", "C"),
        (7.1, "group1_rigid", "D"),
        (10.9, "group1_flexible", "C"),
        (11.0, "group1_flexible", "D"),
        (3.0, "GROUP1_RIGID", "B"),
    ];
    for (v, class, zone) in cases {
        let b = ctx
            .sql(&format!("SELECT iso10816_zone({v}, '{class}')"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let s = datafusion::arrow::compute::cast(b[0].column(0), &DataType::Utf8).unwrap();
        assert_eq!(s.as_string::<i32>().value(0), zone, "{v} mm/s, {class}");
    }
    let b = ctx
        .sql("SELECT iso10816_zone(CAST(NULL AS DOUBLE), 'group1_rigid')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(b[0].column(0).is_null(0));
    let e = ctx
        .sql("SELECT iso10816_zone(1.0, 'class_x')")
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("unknown machine class 'class_x'")
    );
}

#[tokio::test]
async fn ewma_and_zscore_per_key_in_batch_sql() {
    // two keys interleaved; computed by hand per key in time order
    let keys: Vec<i64> = (0..40).map(|i| i % 2).collect();
    let ts: Vec<f64> = (0..40).map(|i| i as f64).collect();
    let v: Vec<f64> = (0..40)
        .map(|i| ((i * 13) % 7) as f64 + if i % 2 == 0 { 100.0 } else { 0.0 })
        .collect();
    let ctx = table(&keys, &ts, &v, 9).await;
    let b = ctx
        .sql("SELECT k, ts, ewma(v, 0.25) OVER (PARTITION BY k ORDER BY ts) AS e, zscore(v, 4) OVER (PARTITION BY k ORDER BY ts) AS z FROM t ORDER BY k, ts")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let b = datafusion::arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
    let e = b.column(2).as_primitive::<Float64Type>();
    let z = b.column(3).as_primitive::<Float64Type>();
    let mut row = 0;
    for k in 0..2 {
        let series: Vec<f64> = (0..40).filter(|i| i % 2 == k).map(|i| v[i]).collect();
        let mut avg: Option<f64> = None;
        for (j, x) in series.iter().enumerate() {
            avg = Some(avg.map_or(*x, |a| 0.25 * x + 0.75 * a));
            assert!(close(e.value(row), avg.unwrap(), 1e-12));
            let hist = &series[j.saturating_sub(4)..j];
            if hist.len() >= 2 {
                let m = hist.iter().sum::<f64>() / hist.len() as f64;
                let sd = (hist.iter().map(|h| (h - m).powi(2)).sum::<f64>()
                    / (hist.len() - 1) as f64)
                    .sqrt();
                if sd > 0.0 {
                    assert!(close(z.value(row), (x - m) / sd, 1e-9), "k {k} row {j}");
                } else {
                    assert!(z.is_null(row));
                }
            } else {
                assert!(z.is_null(row));
            }
            row += 1;
        }
    }
}
