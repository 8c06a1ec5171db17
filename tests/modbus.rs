//! The Modbus connector against real Modbus servers started by the tests (tokio-modbus'
//! server on a free loopback port, and on a socat pseudo-terminal pair for RTU): every data
//! type in every byte/word order, request coalescing counted on the server, exceptions,
//! timeouts, server restarts and line noise, and windows over polled values.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::harness::DrivenSink;
use weir_test_support::modbus_server;
use weir_test_support::run_output;
use weir_test_support::weir_process;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use modbus_server::{ModbusServer, Shared, device, scattered_map};
use run_output::{now_ms, skipped, summary_rows, time_ms};
use serde_json::Value;
use tokio_modbus::ExceptionCode;
use weir_process::WeirProcess;

/// The device's registers, as the test wrote them: `(unit, table, address) = value`.
fn set_holding(d: &Shared, unit: u8, address: u16, words: &[u16]) {
    let mut d = d.lock().unwrap();
    let bank = d.banks.get_mut(&unit).unwrap();
    bank.holding[address as usize..address as usize + words.len()].copy_from_slice(words);
}

/// Registers holding the big-endian bytes `be` as a device of `order` sends them. The
/// byte positions per order are written out, not derived: index i of the result is byte
/// `PERMUTATION[i]` of the big-endian value.
fn device_words(be: &[u8], order: &str) -> Vec<u16> {
    let permutation: &[usize] = match (be.len(), order) {
        (2, "ABCD" | "CDAB") => &[0, 1],
        (2, "BADC" | "DCBA") => &[1, 0],
        (4, "ABCD") => &[0, 1, 2, 3],
        (4, "CDAB") => &[2, 3, 0, 1],
        (4, "BADC") => &[1, 0, 3, 2],
        (4, "DCBA") => &[3, 2, 1, 0],
        (8, "ABCD") => &[0, 1, 2, 3, 4, 5, 6, 7],
        (8, "CDAB") => &[6, 7, 4, 5, 2, 3, 0, 1],
        (8, "BADC") => &[1, 0, 3, 2, 5, 4, 7, 6],
        (8, "DCBA") => &[7, 6, 5, 4, 3, 2, 1, 0],
        other => panic!("no permutation for {other:?}"),
    };
    let bytes: Vec<u8> = permutation.iter().map(|&i| be[i]).collect();
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

#[test]
fn every_type_and_order_decodes_to_the_expected_value() {
    let dev = device(&[7]);
    // values whose bytes all differ, so that any wrong order gives another value
    let i16v: i16 = -12_345; // 0xCFC7
    let u16v: u16 = 0xA1B2;
    let i32v: i32 = -123_456_789; // 0xF8A432EB
    let u32v: u32 = 0x89AB_CDEF;
    let i64v: i64 = -0x0123_4567_89AB_CDEF;
    let u64v: u64 = 0xFEDC_BA98_7654_3210;
    let f32v: f32 = -1234.567;
    let f64v: f64 = 98_765.432_101_234;
    let text = "Weir-PLC";
    let mut columns = vec!["ts TIMESTAMP".to_string(), "unit INT".to_string()];
    let mut map = Vec::new();
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    let mut address = 0u16;
    for order in ORDERS {
        let o = order.to_lowercase();
        let values: Vec<(&str, &str, Vec<u8>, Value)> = vec![
            ("i16", "int16", i16v.to_be_bytes().to_vec(), i16v.into()),
            ("u16", "uint16", u16v.to_be_bytes().to_vec(), u16v.into()),
            ("i32", "int32", i32v.to_be_bytes().to_vec(), i32v.into()),
            ("u32", "uint32", u32v.to_be_bytes().to_vec(), u32v.into()),
            ("i64", "int64", i64v.to_be_bytes().to_vec(), i64v.into()),
            ("u64", "uint64", u64v.to_be_bytes().to_vec(), u64v.into()),
            (
                "f32",
                "float32",
                f32v.to_be_bytes().to_vec(),
                (f32v as f64).into(),
            ),
            ("f64", "float64", f64v.to_be_bytes().to_vec(), f64v.into()),
        ];
        for (name, ty, be, value) in values {
            let column = format!("{name}_{o}");
            let sql_type = match name {
                "i16" | "i32" | "i64" => "BIGINT",
                "u16" | "u32" | "u64" => "BIGINT UNSIGNED",
                _ => "DOUBLE",
            };
            columns.push(format!("{column} {sql_type}"));
            map.push(format!("{column} = holding {address} {ty} {order}"));
            let words = device_words(&be, order);
            set_holding(&dev, 7, address, &words);
            address += words.len() as u16;
            expected.insert(column, value);
        }
        // text: registers in order, two characters each, the byte order inside varies
        let column = format!("text_{o}");
        columns.push(format!("{column} VARCHAR"));
        map.push(format!("{column} = input {address} string(5) {order}"));
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(10, 0);
        let swapped = order == "BADC" || order == "DCBA";
        let words: Vec<u16> = bytes
            .chunks(2)
            .map(|c| {
                if swapped {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        {
            let mut d = dev.lock().unwrap();
            let bank = d.banks.get_mut(&7).unwrap();
            bank.input[address as usize..address as usize + 5].copy_from_slice(&words);
        }
        address += 5;
        expected.insert(column, text.into());
    }
    // bits of a register, coils, discrete inputs; scale and offset
    set_holding(&dev, 7, 500, &[0b1000_0000_0000_0101, 1234]);
    {
        let mut d = dev.lock().unwrap();
        let bank = d.banks.get_mut(&7).unwrap();
        bank.coils[3] = true;
        bank.discrete[9] = true;
    }
    for (column, sql_type, entry, value) in [
        ("bit0", "BOOLEAN", "holding 500 bit=0", Value::Bool(true)),
        ("bit1", "BOOLEAN", "holding 500 bit=1", Value::Bool(false)),
        ("bit15", "BOOLEAN", "holding 500 bit=15", Value::Bool(true)),
        ("coil3", "BOOLEAN", "coil 3", Value::Bool(true)),
        ("coil4", "BOOLEAN", "coil 4", Value::Bool(false)),
        ("di9", "BOOLEAN", "discrete 9", Value::Bool(true)),
        (
            "scaled",
            "DOUBLE",
            "holding 501 uint16 scale=0.1 offset=-20",
            (1234.0 * 0.1 - 20.0).into(),
        ),
    ] {
        columns.push(format!("{column} {sql_type}"));
        map.push(format!("{column} = {entry}"));
        expected.insert(column.to_string(), value);
    }
    let server = ModbusServer::tcp(dev);
    let started_ms = now_ms();
    let weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE plc ({}) WITH (connector = 'modbus', url = 'tcp://127.0.0.1:{}',
                unit_id = '7', unit_column = 'unit', time_column = 'ts', interval = '100ms',
                registers = '{}');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM plc;",
            columns.join(", "),
            server.port,
            map.join("; ")
        ),
        &[],
    );
    let mut weir = weir;
    weir.wait_rows(2);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let row = &weir.rows()[0];
    assert_eq!(row["unit"], 7);
    // stamped when the answer arrived: after the start, before the test looked
    let ts = time_ms(&row["ts"]);
    assert!(started_ms <= ts && ts <= now_ms(), "{row}");
    for (column, value) in &expected {
        let got = &row[column.as_str()];
        match value {
            Value::Number(n) if n.is_f64() => {
                let (g, e) = (got.as_f64().unwrap(), n.as_f64().unwrap());
                assert!((g - e).abs() <= e.abs() * 1e-12, "{column}: {g} vs {e}");
            }
            _ => assert_eq!(got, value, "{column}"),
        }
    }
    assert!(
        skipped(&weir.stderr(), "plc").is_empty(),
        "{}",
        weir.stderr()
    );
}

#[test]
fn scattered_registers_are_read_with_the_planned_requests() {
    let dev = device(&[1, 2]);
    for unit in [1u8, 2] {
        let words: Vec<u16> = (0..450).map(|a| a * 3 + unit as u16).collect();
        set_holding(&dev, unit, 0, &words);
    }
    let server = ModbusServer::tcp(dev);
    let (columns, map, expected) = scattered_map();
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE meters ({columns}) WITH (connector = 'modbus', url = 'tcp://127.0.0.1:{}',
                unit_id = '1,2', unit_column = 'unit', interval = '200ms', registers = '{}');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT unit, h0, h29, s200, s448 FROM meters;",
            server.port,
            map.join("; ")
        ),
        &[],
    );
    weir.wait_rows(6);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let rows = weir.rows();
    let log = server.log();
    let ranges: BTreeSet<(u8, u16, u16)> =
        log.iter().map(|s| (s.function, s.start, s.count)).collect();
    assert_eq!(ranges, expected);
    // every poll of every unit: exactly the planned reads, no more
    assert_eq!(
        log.len(),
        rows.len() * expected.len(),
        "{} rows",
        rows.len()
    );
    for r in &rows {
        let unit = r["unit"].as_i64().unwrap();
        assert_eq!(r["h0"], unit);
        assert_eq!(r["h29"], 29 * 3 + unit);
        assert_eq!(r["s200"], 200 * 3 + unit);
        assert_eq!(r["s448"], 448 * 3 + unit);
    }
    assert_eq!(
        rows.iter().filter(|r| r["unit"] == 1).count(),
        rows.iter().filter(|r| r["unit"] == 2).count()
    );
}

#[test]
fn exceptions_timeouts_and_restarts_are_counted_and_polling_recovers() {
    let dev = device(&[1, 2]);
    set_holding(&dev, 1, 0, &[11]);
    set_holding(&dev, 2, 0, &[22]);
    {
        let mut d = dev.lock().unwrap();
        for (unit, v) in [(1u8, 101u16), (2, 202)] {
            d.banks.get_mut(&unit).unwrap().holding[100] = v;
            d.banks.get_mut(&unit).unwrap().input[0] = v + 1;
        }
        // the register at 100 does not exist on this device
        d.exceptions
            .push((3, 100, 100, ExceptionCode::IllegalDataAddress));
    }
    let mut server = ModbusServer::tcp(dev);
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE plc (unit INT, a BIGINT, b BIGINT, c BIGINT) WITH (connector = 'modbus',
                url = 'tcp://127.0.0.1:{}', unit_id = '1-2', unit_column = 'unit', interval = '100ms',
                timeout = '200ms', retries = '0', max_gap = '0',
                registers = 'a = holding 0; b = holding 100; c = input 0');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM plc;",
            server.port
        ),
        &[],
    );
    weir.wait_rows(6);
    // the rows keep the readable columns; the missing register is null
    for r in weir.rows() {
        let unit = r["unit"].as_i64().unwrap();
        assert_eq!(r["a"], unit * 11, "{r}");
        assert_eq!(r["b"], Value::Null, "{r}");
        assert_eq!(r["c"], unit * 101 + 1, "{r}");
    }
    // a busy input table, then unit 2 goes silent: its requests time out, unit 1 goes on
    server.with(|d| {
        d.exceptions
            .push((4, 0, 0, ExceptionCode::ServerDeviceBusy))
    });
    let n = weir.rows().len();
    weir.wait_rows(n + 4);
    server.with(|d| {
        d.exceptions.retain(|e| e.0 != 4);
        d.silent.push(2);
    });
    std::thread::sleep(Duration::from_millis(1200));
    server.with(|d| d.silent.clear());
    let unit2_rows = |w: &WeirProcess| w.rows().iter().filter(|r| r["unit"] == 2).count();
    let before = unit2_rows(&weir);
    weir.wait_for("unit 2 again", Duration::from_secs(20), |w| {
        unit2_rows(w) >= before + 3
    });
    // the server goes away and comes back on the same port
    server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let during = weir.rows().len();
    server.restart();
    weir.wait_for("rows after the restart", Duration::from_secs(30), |w| {
        w.rows().len() >= during + 6
    });
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let rows = weir.rows();
    let last = rows.iter().rev().find(|r| r["unit"] == 2).unwrap();
    assert_eq!(last["a"], 22);
    assert_eq!(last["c"], 203);
    let counts = skipped(&weir.stderr(), "plc");
    let log = server.log();
    let refused = |code| log.iter().filter(|s| s.exception == Some(code)).count() as u64;
    assert_eq!(
        counts.get("illegal_data_address"),
        Some(&refused(ExceptionCode::IllegalDataAddress)),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("server_device_busy"),
        Some(&refused(ExceptionCode::ServerDeviceBusy)),
        "{counts:?}"
    );
    assert!(counts.get("timeout").is_some_and(|n| *n >= 3), "{counts:?}");
    let while_down =
        counts.get("connection_lost").unwrap_or(&0) + counts.get("not_connected").unwrap_or(&0);
    assert!(while_down >= 1, "{counts:?}");
    let stderr = weir.stderr();
    assert!(stderr.contains("modbus cannot connect"), "{stderr}");
    assert!(stderr.matches("modbus connected").count() >= 2, "{stderr}");
    assert_eq!(summary_rows(&stderr, "plc"), rows.len() as u64);
}

/// CRC-16/MODBUS (polynomial 0xA001, reflected, initial 0xFFFF).
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for b in data {
        crc ^= *b as u16;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                crc >> 1 ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[test]
fn rtu_over_a_serial_line_survives_noise() {
    let dev = device(&[3, 4]);
    set_holding(&dev, 3, 10, &device_words(&1.5f32.to_be_bytes(), "CDAB"));
    set_holding(
        &dev,
        4,
        10,
        &device_words(&(-2.25f32).to_be_bytes(), "CDAB"),
    );
    set_holding(&dev, 3, 12, &[300]);
    set_holding(&dev, 4, 12, &[400]);
    let server = ModbusServer::rtu(dev, 38400);
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE line (unit INT, current DOUBLE, count BIGINT) WITH (connector = 'modbus',
                url = 'rtu://{}', baud_rate = '38400', parity = 'none', unit_id = '3,4',
                unit_column = 'unit', interval = '50ms', timeout = '300ms',
                registers = 'current = holding 10 float32 CDAB; count = holding 12 uint16');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM line;",
            server.client_tty.display()
        ),
        &[],
    );
    weir.wait_rows(4);
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let stop = Arc::clone(&stop);
        let tty = server.server_tty.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(tty).unwrap();
            let mut x = 0x2545_F491u32;
            while !stop.load(Ordering::SeqCst) {
                let junk: Vec<u8> = (0..24)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = f.write_all(&junk);
                std::thread::sleep(Duration::from_millis(7));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    noise.join().unwrap();
    let n = weir.rows().len();
    weir.wait_rows(n + 10);
    // a stray frame with a valid checksum from a unit nobody asked (9), while unit 3 is
    // silent: taken for unit 3's answer it would be wrong data
    server.with(|d| d.silent.push(3));
    let mut stray = vec![9u8, 3, 2, 0x12, 0x34];
    stray.extend(crc16(&stray).to_le_bytes());
    for _ in 0..40 {
        server.noise(&stray);
        std::thread::sleep(Duration::from_millis(25));
    }
    server.with(|d| d.silent.clear());
    let n = weir.rows().len();
    weir.wait_rows(n + 10);
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    let rows = weir.rows();
    // whatever the noise did, no row holds a wrong value
    for r in &rows {
        let (current, count) = match r["unit"].as_i64().unwrap() {
            3 => (1.5, 300),
            4 => (-2.25, 400),
            u => panic!("unit {u}"),
        };
        if !r["current"].is_null() {
            assert_eq!(r["current"].as_f64().unwrap(), current, "{r}");
        }
        if !r["count"].is_null() {
            assert_eq!(r["count"], count, "{r}");
        }
    }
    // the rows after the noise are complete again
    for r in &rows[rows.len() - 6..] {
        assert!(!r["current"].is_null() && !r["count"].is_null(), "{r}");
    }
    let counts = skipped(&weir.stderr(), "line");
    assert!(
        counts
            .keys()
            .all(|k| ["bad_response", "timeout", "unit_backoff"].contains(&k.as_str())),
        "{counts:?}"
    );
    assert!(
        counts.get("bad_response").is_some_and(|n| *n >= 1),
        "the stray frames went unnoticed: {counts:?}"
    );
}

#[test]
fn windows_over_polled_values_match_an_independent_computation() {
    let dev = device(&[1, 2]);
    let server = ModbusServer::tcp(Arc::clone(&dev));
    // the device updates its clock (epoch ms, uint64) and a temperature every 10 ms
    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let (stop, dev) = (Arc::clone(&stop), Arc::clone(&dev));
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let now_ms = now_ms() as u64;
                for unit in [1u8, 2] {
                    let temp =
                        20.0f32 + unit as f32 * 10.0 + ((k * 7 + unit as u64) % 23) as f32 / 4.0;
                    let mut words = device_words(&temp.to_be_bytes(), "ABCD");
                    words.extend(device_words(&now_ms.to_be_bytes(), "ABCD"));
                    set_holding(&dev, unit, 0, &words);
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE oven (unit INT, temp DOUBLE, ts TIMESTAMP) WITH (connector = 'modbus',
                url = 'tcp://127.0.0.1:{}', unit_id = '1,2', unit_column = 'unit', interval = '30ms',
                registers = 'temp = holding 0 float32; ts = holding 2 uint64', timestamp_unit = 'ms',
                event_time = 'ts', watermark = '500ms');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT unit, window_start, count(*) AS n, avg(temp) AS mean, min(temp) AS low, max(temp) AS high
             FROM TUMBLE(oven, ts, INTERVAL '1' SECOND) GROUP BY unit, window_start, window_end;",
            server.port
        ),
        &[],
    );
    weir.wait_rows(8);
    let (status, weir) = weir.stop();
    stop.store(true, Ordering::SeqCst);
    updater.join().unwrap();
    assert!(status.success(), "{}", weir.stderr());
    // the expectation, from what the server answered
    let mut expected: BTreeMap<(i64, i64), (i64, f64, f64, f64)> = BTreeMap::new();
    for s in server.log() {
        let temp = f32::from_bits((s.words[0] as u32) << 16 | s.words[1] as u32) as f64;
        let ts = s.words[2..6]
            .iter()
            .fold(0u64, |acc, w| acc << 16 | *w as u64) as i64;
        let e = expected
            .entry((s.unit as i64, ts.div_euclid(1000) * 1000))
            .or_insert((0, 0.0, f64::MAX, f64::MIN));
        e.0 += 1;
        e.1 += temp;
        e.2 = e.2.min(temp);
        e.3 = e.3.max(temp);
    }
    let mut got = BTreeMap::new();
    for r in weir.rows() {
        let start = time_ms(&r["window_start"]);
        let prev = got.insert(
            (r["unit"].as_i64().unwrap(), start),
            (
                r["n"].as_i64().unwrap(),
                r["mean"].as_f64().unwrap(),
                r["low"].as_f64().unwrap(),
                r["high"].as_f64().unwrap(),
            ),
        );
        assert!(prev.is_none(), "window emitted twice: {r}");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (k, (n, sum, low, high)) in &expected {
        let g = &got[k];
        assert_eq!(g.0, *n, "{k:?}");
        assert!((g.1 - sum / *n as f64).abs() < 1e-9, "{k:?}");
        assert_eq!((g.2, g.3), (*low, *high), "{k:?}");
    }
    assert!(
        weir.stderr().contains("0 late rows dropped"),
        "{}",
        weir.stderr()
    );
}

/// `weir check` on a pipeline in `dir`; returns (success, stderr).
fn check(dir: &std::path::Path, pipeline: &str) -> (bool, String) {
    std::fs::write(dir.join("pipeline.sql"), pipeline).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "pipeline.sql"])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn map_files_load_and_mistakes_point_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("press.yaml"),
        "registers:\n  running: coil 0\n  fault: holding 10 bit=3\n  cycles:\n    table: holding\n    address: 0x0200\n    type: uint32\n    order: CDAB\n  recipe: holding 300 string(8)\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("extra.json"),
        r#"{"registers": {"pressure": {"table": "input", "address": 4, "type": "int16", "scale": 0.01}}}"#,
    )
    .unwrap();
    let source = |options: &str| {
        format!(
            "CREATE SOURCE press (ts TIMESTAMP, running BOOLEAN, fault BOOLEAN, cycles BIGINT, recipe VARCHAR, pressure DOUBLE)
             WITH (connector = 'modbus', url = 'rtu:///dev/ttyUSB0', event_time = 'ts', {options});
             CREATE SINK out WITH (connector = 'stdout');
             INSERT INTO out SELECT * FROM press;"
        )
    };
    let (ok, err) = check(
        dir.path(),
        &source("register_map = 'press.yaml', registers = 'pressure = input 4 int16 scale=0.01'"),
    );
    assert!(ok, "{err}");
    // the same point from a JSON file; the YAML file's second half inline
    let (ok, err) = check(
        dir.path(),
        &source(
            "register_map = 'extra.json', registers = 'running = coil 0; fault = holding 10 bit=3; cycles = holding 0x200 uint32 CDAB; recipe = holding 300 string(8)'",
        ),
    );
    assert!(ok, "{err}");
    for (options, message) in [
        (
            "register_map = 'press.yaml', registers = 'pressure = holdings 4'",
            "unknown table 'holdings'",
        ),
        (
            "register_map = 'press.yaml', registers = 'pressure = input 4 float'",
            "unknown type 'float'",
        ),
        (
            "register_map = 'press.yaml', registers = 'presure = input 4'",
            "'presure', which is not a column",
        ),
        (
            "register_map = 'press.yaml', registers = 'recipe = input 4'",
            "'recipe' is mapped twice",
        ),
        ("register_map = 'missing.yaml'", "cannot read register map"),
        (
            "register_map = 'press.yaml'",
            "column 'pressure' is not filled",
        ),
        (
            "register_map = 'press.yaml', registers = 'pressure = input 4', parity = 'mark'",
            "expected one of none, even, odd",
        ),
    ] {
        let (ok, err) = check(dir.path(), &source(options));
        assert!(!ok, "{options}");
        assert!(err.contains(message), "{options}: {err}");
        // map mistakes point at the option's value, a missing column at the statement
        let line = if message.contains("not filled") { 1 } else { 2 };
        assert!(
            err.contains(&format!("pipeline.sql:{line}:")),
            "{options}: {err}"
        );
    }
}

#[test]
fn a_silent_unit_does_not_hold_back_the_others() {
    // units 1 and 2 answer, unit 98 never does; each unit takes three reads
    let dev = device(&[1, 2, 98]);
    for unit in [1u8, 2, 98] {
        set_holding(&dev, unit, 0, &[unit as u16]);
        set_holding(&dev, unit, 100, &[unit as u16 + 1]);
        set_holding(&dev, unit, 200, &[unit as u16 + 2]);
    }
    dev.lock().unwrap().silent.push(98);
    let server = ModbusServer::tcp(dev);
    let mut weir = WeirProcess::start(
        &format!(
            "CREATE SOURCE plc (unit INT, a BIGINT, b BIGINT, c BIGINT) WITH (connector = 'modbus',
                url = 'tcp://127.0.0.1:{}', unit_id = '1,2,98', unit_column = 'unit', interval = '200ms',
                timeout = '100ms', retries = '1', max_gap = '0',
                registers = 'a = holding 0; b = holding 100; c = holding 200');
             CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
             INSERT INTO out SELECT * FROM plc;",
            server.port
        ),
        &[],
    );
    weir.wait_rows(2);
    let healthy = |w: &WeirProcess| w.rows().iter().filter(|r| r["unit"] == 1).count();
    let before = healthy(&weir);
    let measured = Duration::from_secs(6);
    std::thread::sleep(measured);
    let polls = healthy(&weir) - before;
    // 30 polls in 6 s at 200 ms; the silent unit's probes cost 100 ms each, backed off
    assert!(
        polls >= 27,
        "unit 1 was polled {polls} times in 6 s instead of 30"
    );
    let (status, weir) = weir.stop();
    assert!(status.success(), "{}", weir.stderr());
    assert!(weir.rows().iter().all(|r| r["unit"] != 98));
    let counts = skipped(&weir.stderr(), "plc");
    assert!(counts.get("timeout").is_some_and(|n| *n >= 2), "{counts:?}");
    assert!(
        counts.get("unit_backoff").is_some_and(|n| *n >= 10),
        "{counts:?}"
    );
    // the silent unit's polls are mostly skipped: far fewer requests than polls × reads
    let log = server.log();
    let to_98 = log.iter().filter(|s| s.unit == 98).count();
    assert!(to_98 < 15, "{to_98} requests to the silent unit");
}

// ---- the sink: writing back to the device ----

/// A Modbus sink of `options` (`url` and the rest) for rows of `columns`, started, fed by the
/// test on a runtime of its own (the test server runs on another); the server's log shows
/// what reached the device.
fn modbus_sink(columns: &str, options: &str, no_writes: bool) -> DrivenSink {
    DrivenSink::start(
        Arc::new(weir_connectors::modbus::ModbusSinkFactory),
        columns,
        &format!("connector = 'modbus', {options}"),
        no_writes,
    )
    .unwrap()
}

/// A sink that writes (`dry_run = 'false'`) to `server` over TCP, with `options` more.
fn writing_to(server: &ModbusServer, columns: &str, options: &str) -> DrivenSink {
    modbus_sink(
        columns,
        &format!(
            "url = 'tcp://127.0.0.1:{}', dry_run = 'false', {options}",
            server.port
        ),
        false,
    )
}

/// Every type in every order lands in the device's registers as that device lays it out
/// (the byte positions written out in `device_words`, not derived from the sink's code);
/// neighbouring registers go in one write (function 16), a lone register with function 6,
/// coils with 5 and 15.
#[test]
fn every_type_and_order_is_written_as_the_device_lays_it_out() {
    let server = ModbusServer::tcp(device(&[5]));
    let mut columns = vec!["i16 SMALLINT".to_string()];
    let mut map = vec!["i16 = holding 0 int16".to_string()];
    let mut expected: Vec<(u16, Vec<u16>)> =
        vec![(0, device_words(&(-12345i16).to_be_bytes(), "ABCD"))];
    let mut row = serde_json::json!({"i16": -12345});
    for (k, order) in ORDERS.iter().enumerate() {
        let base = 100 * (k as u16 + 1);
        for (j, (name, ty, value, be)) in [
            (
                "u32",
                "uint32",
                serde_json::json!(0xA1B2C3D4u32),
                0xA1B2C3D4u32.to_be_bytes().to_vec(),
            ),
            (
                "i32",
                "int32",
                serde_json::json!(-123456789),
                (-123456789i32).to_be_bytes().to_vec(),
            ),
            (
                "f32",
                "float32",
                serde_json::json!(-1.25e-3),
                (-1.25e-3f32).to_be_bytes().to_vec(),
            ),
            (
                "f64",
                "float64",
                serde_json::json!(6.02214076e23),
                6.02214076e23f64.to_be_bytes().to_vec(),
            ),
            (
                "i64",
                "int64",
                serde_json::json!(-1234567890123456789i64),
                (-1234567890123456789i64).to_be_bytes().to_vec(),
            ),
            (
                "u16",
                "uint16",
                serde_json::json!(0xBEEF),
                0xBEEFu16.to_be_bytes().to_vec(),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let col = format!("{name}_{}", order.to_lowercase());
            let address = base + 10 * j as u16;
            let sql = match ty {
                "float32" | "float64" => "DOUBLE",
                _ => "BIGINT",
            };
            columns.push(format!("{col} {sql}"));
            map.push(format!("{col} = holding {address} {ty} {order}"));
            row[&col] = value;
            expected.push((address, device_words(&be, order)));
        }
    }
    // neighbours: three registers in a row, then coils 7..=9 and a lone coil
    for (col, address) in [("n0", 1000), ("n1", 1001), ("n2", 1002)] {
        columns.push(format!("{col} INT"));
        map.push(format!("{col} = holding {address} uint16"));
        row[col] = serde_json::json!(address + 1);
        expected.push((address, vec![address + 1]));
    }
    for (col, address, on) in [
        ("c7", 7, true),
        ("c8", 8, false),
        ("c9", 9, true),
        ("c20", 20, true),
    ] {
        columns.push(format!("{col} BOOLEAN"));
        map.push(format!("{col} = coil {address}"));
        row[col] = serde_json::json!(on);
    }
    columns.push("tag VARCHAR".into());
    map.push("tag = holding 2000 string(3)".into());
    row["tag"] = serde_json::json!("PUMP");
    expected.push((
        2000,
        vec![u16::from_be_bytes(*b"PU"), u16::from_be_bytes(*b"MP"), 0],
    ));
    let mut sink = writing_to(
        &server,
        &columns.join(", "),
        &format!("unit_id = '5', registers = '{}'", map.join("; ")),
    );
    sink.write(&[row]);
    server.with(|d| {
        let bank = &d.banks[&5];
        for (address, words) in &expected {
            let a = *address as usize;
            assert_eq!(
                &bank.holding[a..a + words.len()],
                &words[..],
                "holding {address}"
            );
        }
        assert_eq!(&bank.coils[7..10], &[true, false, true]);
        assert!(bank.coils[20]);
    });
    let writes = server.with(|d| d.writes());
    let calls = |f: u8| writes.iter().filter(|w| w.function == f).count();
    // 1000..=1002 in one write of 3; coils 7..=9 in one of 3, coil 20 alone; i16 alone
    assert!(
        writes
            .iter()
            .any(|w| w.function == 16 && w.start == 1000 && w.count == 3),
        "{writes:?}"
    );
    assert!(
        writes
            .iter()
            .any(|w| w.function == 15 && w.start == 7 && w.count == 3),
        "{writes:?}"
    );
    assert!(
        writes.iter().any(|w| w.function == 5 && w.start == 20),
        "{writes:?}"
    );
    assert!(
        writes.iter().any(|w| w.function == 6 && w.start == 0),
        "{writes:?}"
    );
    assert_eq!(calls(16) + calls(15) + calls(6) + calls(5), writes.len());
    let values = expected.len() as u64 + 4;
    assert_eq!(
        sink.writes().get("written"),
        Some(&values),
        "{:?}",
        sink.writes()
    );
}

/// The map is the allowlist: no column of the rows, whatever it holds, can reach another
/// address; nulls, NaN and values out of range are refused and counted, never clamped.
#[test]
fn only_mapped_registers_are_written_and_bad_values_are_refused() {
    let server = ModbusServer::tcp(device(&[1, 2]));
    let mut sink = writing_to(
        &server,
        "unit INT, address INT, speed DOUBLE, limit_ BIGINT, run BOOLEAN",
        "unit_id = '1', unit_column = 'unit',
         registers = 'speed = holding 100 int16 scale=0.1; limit_ = holding 101 uint16; run = coil 3'",
    );
    sink.write(&[
        serde_json::json!({"unit": 1, "address": 999, "speed": 12.3, "limit_": 500, "run": true}),
        // out of range, NaN (as null in JSON: the float NaN below), null, another unit
        serde_json::json!({"unit": 1, "address": 7, "speed": 4000.0, "limit_": -1}),
        serde_json::json!({"unit": 2, "address": 999, "speed": 1.0, "limit_": 1, "run": false}),
    ]);
    let batch = arrow::array::RecordBatch::try_new(
        Arc::clone(&sink.schema),
        vec![
            Arc::new(arrow::array::Int32Array::from(vec![1])),
            Arc::new(arrow::array::Int32Array::from(vec![999])),
            Arc::new(arrow::array::Float64Array::from(vec![f64::NAN])),
            Arc::new(arrow::array::Int64Array::from(vec![70000])),
            Arc::new(arrow::array::BooleanArray::from(vec![None])),
        ],
    )
    .unwrap();
    sink.write_batch(batch);
    let writes = server.with(|d| d.writes());
    let addresses: BTreeSet<(u8, u8, u16)> = writes
        .iter()
        .map(|w| (w.unit, w.function, w.start))
        .collect();
    // speed and limit_ neighbours in one write; the coil alone; nothing for unit 2 or 999/7
    assert_eq!(addresses, [(1, 16, 100), (1, 5, 3)].into(), "{writes:?}");
    server.with(|d| {
        assert_eq!(&d.banks[&1].holding[100..102], &[123, 500]);
        assert_eq!(d.banks[&1].holding[999], 0);
        assert_eq!(d.banks[&2].holding[100], 0);
    });
    // refused: row 2 (speed out of range after scale, limit_ −1, run null), row 3 (unit 2:
    // all three), row 4 (NaN, 70000, null)
    let w = sink.writes();
    assert_eq!(w.get("refused"), Some(&9), "{w:?}");
    assert_eq!(w.get("written"), Some(&3), "{w:?}");
}

/// `write_on_change` and `min_interval`, seen in the server's request log.
#[test]
fn equal_values_are_not_resent_and_min_interval_keeps_only_the_latest() {
    let server = ModbusServer::tcp(device(&[1]));
    let mut sink = writing_to(
        &server,
        "speed INT",
        "min_interval = '400ms', registers = 'speed = holding 10'",
    );
    let set = |v: i64| serde_json::json!({ "speed": v });
    sink.write(&[set(1)]);
    sink.write(&[set(1)]); // unchanged
    sink.write(&[set(2)]); // waits for min_interval ...
    sink.write(&[set(3)]); // ... and is replaced by 3
    sink.tick();
    assert_eq!(server.with(|d| d.writes()).len(), 1, "2 and 3 wait");
    std::thread::sleep(Duration::from_millis(450));
    sink.tick();
    sink.write(&[set(3)]); // unchanged now
    let writes = server.with(|d| d.writes());
    let values: Vec<u16> = writes.iter().map(|w| w.words[0]).collect();
    assert_eq!(values, vec![1, 3]);
    assert!(writes[1].at_ms - writes[0].at_ms >= 400, "{writes:?}");
    let w = sink.writes();
    assert_eq!(
        (w["written"], w["unchanged"], w["superseded"]),
        (2, 2, 1),
        "{w:?}"
    );
}

/// Exception answers are counted by kind and not retried; while the device is away a value
/// waits, a newer one replaces it, and after the restart only the newest is written.
#[test]
fn exceptions_are_counted_and_a_restart_replays_only_the_latest_value() {
    let dev = device(&[1]);
    dev.lock()
        .unwrap()
        .exceptions
        .push((6, 50, 50, ExceptionCode::IllegalDataAddress));
    let mut server = ModbusServer::tcp(dev);
    let mut sink = writing_to(
        &server,
        "speed INT, missing INT",
        "timeout = '300ms', retries = '0', registers = 'speed = holding 10; missing = holding 50'",
    );
    sink.write(&[serde_json::json!({"speed": 1, "missing": 5})]);
    assert_eq!(sink.writes().get("illegal_data_address"), Some(&1));
    server.with(|d| {
        d.exceptions
            .push((6, 10, 10, ExceptionCode::ServerDeviceBusy))
    });
    sink.write(&[serde_json::json!({"speed": 2})]);
    assert_eq!(sink.writes().get("server_device_busy"), Some(&1));
    server.with(|d| d.exceptions.clear());
    server.kill();
    sink.write(&[serde_json::json!({"speed": 3})]);
    sink.write(&[serde_json::json!({"speed": 4})]);
    sink.write(&[serde_json::json!({"speed": 5})]);
    let w = sink.writes();
    let failed = w.get("connection_lost").unwrap_or(&0)
        + w.get("not_connected").unwrap_or(&0)
        + w.get("timeout").unwrap_or(&0);
    assert!(failed >= 1, "{w:?}");
    server.restart();
    for _ in 0..100 {
        sink.tick();
        if server.with(|d| d.banks[&1].holding[10]) == 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let writes = server.with(|d| d.writes());
    let speeds: Vec<u16> = writes
        .iter()
        .filter(|w| w.start == 10 && w.exception.is_none())
        .map(|w| w.words[0])
        .collect();
    // 1 before; 2 refused busy (not retried); 3 and 4 never reach the device
    assert_eq!(speeds, vec![1, 5], "{writes:?}");
    assert_eq!(
        sink.writes().get("superseded"),
        Some(&2),
        "{:?}",
        sink.writes()
    );
}

/// A bit of a holding register: mask write (function 22) leaves the other bits alone; a
/// device without it refuses the value unless read-modify-write is allowed.
#[test]
fn a_bit_of_a_register_is_mask_written_or_read_modified_and_written_when_allowed() {
    let dev = device(&[1]);
    set_holding(&dev, 1, 40, &[0b1010_0000_0000_0001]);
    let server = ModbusServer::tcp(dev);
    let options = |rmw: bool| {
        format!(
            "allow_read_modify_write = '{rmw}', verify = 'true', registers = 'request = holding 40 bit=3'"
        )
    };
    let mut sink = writing_to(&server, "request BOOLEAN", &options(false));
    sink.write(&[serde_json::json!({"request": true})]);
    assert_eq!(
        server.with(|d| d.banks[&1].holding[40]),
        0b1010_0000_0000_1001
    );
    assert_eq!(server.with(|d| d.writes())[0].function, 22);
    assert_eq!(sink.writes().get("verify_mismatch"), None);
    server.with(|d| d.no_mask_write = true);
    sink.write(&[serde_json::json!({"request": false})]);
    assert_eq!(
        server.with(|d| d.banks[&1].holding[40]),
        0b1010_0000_0000_1001
    );
    assert_eq!(
        sink.writes().get("mask_write_unsupported"),
        Some(&1),
        "{:?}",
        sink.writes()
    );
    let mut sink = writing_to(&server, "request BOOLEAN", &options(true));
    sink.write(&[serde_json::json!({"request": false})]);
    assert_eq!(
        server.with(|d| d.banks[&1].holding[40]),
        0b1010_0000_0000_0001
    );
    let last = server.with(|d| d.writes()).pop().unwrap();
    assert_eq!(
        (last.function, last.words.clone()),
        (6, vec![0b1010_0000_0000_0001])
    );
    assert_eq!(sink.writes().get("written"), Some(&1));
}

/// `verify`: a device that acknowledges a write but keeps another value is counted.
#[test]
fn a_read_back_that_differs_is_counted() {
    let server = ModbusServer::tcp(device(&[1]));
    let mut sink = writing_to(
        &server,
        "a INT, b INT",
        "verify = 'true', registers = 'a = holding 1; b = holding 9'",
    );
    sink.write(&[serde_json::json!({"a": 11, "b": 12})]);
    assert_eq!(sink.writes().get("verify_mismatch"), None);
    // the device clamps b (as a PLC with its own limit would)
    server.with(|d| d.clamp = Some((9, 100)));
    sink.write(&[serde_json::json!({"a": 13, "b": 500})]);
    assert_eq!(
        sink.writes().get("verify_mismatch"),
        Some(&1),
        "{:?}",
        sink.writes()
    );
    let reads = server.log().iter().filter(|s| s.function == 3).count();
    assert_eq!(reads, 4, "one read back per value");
}

/// Dry run is the default, and `--no-writes` makes a sink with `dry_run = 'false'` one:
/// nothing reaches the device, the log lists each would-be write.
#[test]
fn dry_runs_write_nothing_and_log_what_they_would_write() {
    let server = ModbusServer::tcp(device(&[1]));
    for (options, no_writes) in [("", false), ("dry_run = 'false',", true)] {
        let mut sink = modbus_sink(
            "speed INT",
            &format!(
                "url = 'tcp://127.0.0.1:{}', {options} registers = 'speed = holding 10'",
                server.port
            ),
            no_writes,
        );
        sink.write(&[serde_json::json!({"speed": 7})]);
        sink.write(&[serde_json::json!({"speed": 8})]);
        assert_eq!(sink.writes().get("dry_run"), Some(&2));
        assert_eq!(sink.writes().get("written"), None);
    }
    assert!(server.log().is_empty(), "{:?}", server.log());
}

/// Over RTU on a serial line (a socat pseudo-terminal pair).
#[test]
fn the_sink_writes_over_rtu() {
    let server = ModbusServer::rtu(device(&[3]), 38400);
    let mut sink = modbus_sink(
        "unit INT, current DOUBLE, count BIGINT",
        &format!(
            "url = 'rtu://{}', baud_rate = '38400', parity = 'none', unit_id = '3', unit_column = 'unit',
             dry_run = 'false', timeout = '500ms', registers = 'current = holding 10 float32 CDAB; count = holding 12 uint16'",
            server.client_tty.display()
        ),
        false,
    );
    sink.write(&[serde_json::json!({"unit": 3, "current": 1.5, "count": 300})]);
    server.with(|d| {
        let mut expected = device_words(&1.5f32.to_be_bytes(), "CDAB");
        expected.push(300);
        assert_eq!(&d.banks[&3].holding[10..13], &expected[..]);
    });
    assert_eq!(
        sink.writes().get("written"),
        Some(&2),
        "{:?}",
        sink.writes()
    );
}

/// End to end: `queries/bearing_derate_modbus.sql` (generator with a bearing fault on M2,
/// one-minute windows) writing to a real server: unit 2 is derated and its maintenance
/// coil raised, once (the later windows repeat the same values), and no other unit is
/// touched. With `--no-writes` nothing reaches the device and the log shows what would.
#[test]
fn a_bearing_fault_derates_exactly_the_faulty_machine_once() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = std::fs::read_to_string(repo.join("queries/bearing_derate_modbus.sql")).unwrap();
    for no_writes in [false, true] {
        let server = ModbusServer::tcp(device(&[1, 2, 3, 4]));
        let sql = pipeline
            .replace(
                "tcp://127.0.0.1:5020",
                &format!("tcp://127.0.0.1:{}", server.port),
            )
            .replace("dry_run     = 'true'", "dry_run     = 'false'");
        assert!(sql.contains("dry_run     = 'false'"));
        let args: &[&str] = if no_writes { &["--no-writes"] } else { &[] };
        let mut weir = WeirProcess::start_with(&sql, args, &[]);
        let status = weir.wait_exit(Duration::from_secs(120));
        let stderr = weir.stderr();
        assert!(status.success(), "{stderr}");
        let writes = server.with(|d| d.writes());
        if no_writes {
            assert!(writes.is_empty(), "{writes:?}");
            assert_eq!(
                stderr.matches("dry run: would write").count(),
                2,
                "{stderr}"
            );
            assert!(
                stderr.contains("target=unit 2 holding 100 (speed_limit_pct)"),
                "{stderr}"
            );
            assert!(
                stderr.contains("values to machines: dry_run 2, unchanged 4"),
                "{stderr}"
            );
            continue;
        }
        let got: BTreeSet<String> = writes
            .iter()
            .map(|w| {
                format!(
                    "unit {} fn {} at {} {:?} {:?}",
                    w.unit, w.function, w.start, w.words, w.bits
                )
            })
            .collect();
        let want: BTreeSet<String> = [
            "unit 2 fn 6 at 100 [70] []".to_string(),
            "unit 2 fn 5 at 10 [] [true]".to_string(),
        ]
        .into();
        assert_eq!(got, want, "{writes:?}");
        assert_eq!(writes.len(), 2, "once: {writes:?}");
        server.with(|d| {
            for unit in [1, 3, 4] {
                assert_eq!(d.banks[&unit].holding[100], 0);
                assert!(!d.banks[&unit].coils[10]);
            }
        });
        assert!(
            stderr.contains("values to machines: unchanged 4, written 2"),
            "{stderr}"
        );
        assert!(stderr.contains("old=(none since start) new=70"), "{stderr}");
    }
}

/// A register map that names a column the INSERT does not give fails `weir check` at the
/// INSERT; a read-only table is refused at the option.
#[test]
fn a_sink_map_that_does_not_fit_the_rows_is_an_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let errors = |registers: &str| {
        let (ok, err) = check(
            dir.path(),
            &format!(
                "CREATE SOURCE g (machine VARCHAR, ts TIMESTAMP, value DOUBLE) WITH (connector = 'generator', event_time = 'ts');
CREATE SINK plc WITH (connector = 'modbus', url = 'tcp://127.0.0.1:502', registers = '{registers}');
INSERT INTO plc SELECT value AS speed FROM g;"
            ),
        );
        assert!(!ok);
        err
    };
    let err = errors("speed = holding 100; run = coil 1");
    assert!(
        err.contains("pipeline.sql:3:13: INSERT INTO plc: the register map writes 'run', which is not among the inserted columns (speed)"),
        "{err}"
    );
    let err = errors("speed = input 100");
    assert!(
        err.contains("pipeline.sql:2:") && err.contains("read-only"),
        "{err}"
    );
}
