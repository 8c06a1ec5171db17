//! Every pipeline in queries/ runs with `weir run` against the generator, and its alerts
//! fire for the machines with injected faults and for no healthy one.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn run_query(file: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("queries")
        .join(file);
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{file}: {stderr}");
    (stdout, stderr)
}

/// Machines named in the NDJSON alerts of kind `alert`.
fn alerted(stdout: &str, alert: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["alert"] == alert)
        .map(|v| v["machine"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bearing_health_alerts_only_the_machine_with_a_bearing_fault() {
    let (out, err) = run_query("bearing_health.sql");
    assert_eq!(alerted(&out, "bearing"), set(&["M2"]), "{out}\n{err}");
    assert_eq!(alerted(&out, "hf_vibration"), set(&["M2"]), "{out}\n{err}");
    assert!(
        err.contains("pipeline bearing_1m: 720000 rows in, 12 rows out, 3 windows emitted"),
        "{err}"
    );
}

#[test]
fn motor_temperature_alerts_only_the_overheating_motor() {
    let (out, err) = run_query("motor_temperature.sql");
    assert_eq!(alerted(&out, "overheat"), set(&["M4"]), "{out}\n{err}");
}

#[test]
fn energy_meter_alerts_only_the_overloaded_machine() {
    let (out, err) = run_query("energy_meter.sql");
    assert_eq!(alerted(&out, "peak_demand"), set(&["M1"]), "{out}\n{err}");
    assert!(
        err.contains("pipeline energy_1m: 900 rows in, 15 rows out, 5 windows emitted"),
        "{err}"
    );
}

#[test]
fn every_query_file_checks() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("queries");
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_none_or(|e| e != "sql") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["check", f.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn vibration_zone_uses_each_machines_class_from_the_asset_table() {
    let (out, err) = run_query("vibration_zone_by_class.sql");
    // M2's bearing fault reaches 3.9 mm/s: zone C for its class (group 2, rigid: C from
    // 2.8), while the same value would be B for M4's (group 1, flexible: C from 7.1)
    assert_eq!(alerted(&out, "iso_zone"), set(&["M2"]), "{out}\n{err}");
    // M1 runs at 0.7 mm/s, over its own 0.5 mm/s limit from the table
    assert_eq!(alerted(&out, "own_limit"), set(&["M1"]), "{out}\n{err}");
    assert!(alerted(&out, "not_in_asset_table").is_empty(), "{out}");
    assert!(err.contains("table assets: 5 rows, version 1"), "{err}");
}

#[test]
fn silent_sensors_alerts_the_machines_that_send_nothing() {
    let (out, err) = run_query("silent_sensors.sql");
    // M3 stops after its first minute; M5 is in the asset table and never sends
    assert_eq!(alerted(&out, "silent"), set(&["M3", "M5"]), "{out}\n{err}");
    // M3's first alert: the two minutes ending at 00:04 are the first both empty
    let first_m3 = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["machine"] == "M3")
        .map(|v| v["window_end"].as_str().unwrap().to_string())
        .min();
    assert_eq!(first_m3.as_deref(), Some("2026-01-01T00:04:00Z"), "{out}");
    // every machine of the table has a row in every minute: 5 machines × 5 minutes
    assert!(
        err.contains("pipeline samples_1m: 960 rows in, 25 rows out, 5 windows emitted"),
        "{err}"
    );
}

#[test]
fn bearing_derate_is_a_dry_run_that_would_derate_only_the_faulty_machine() {
    let (_, err) = run_query("bearing_derate_modbus.sql");
    let would: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("dry run: would write"))
        .collect();
    assert_eq!(would.len(), 2, "{err}");
    assert!(would.iter().all(|l| l.contains("target=unit 2 ")), "{err}");
    assert!(
        err.contains("sink plc: values to machines: dry_run 2, unchanged 4"),
        "{err}"
    );
}
