//! Modbus polling: polls/s and registers/s of `weir run` against a local Modbus TCP server
//! (tokio-modbus, in this process) for the 200-register map of the tests, with requests
//! coalesced (8 per poll) and with one request per register (200 per poll), in the same run;
//! and Weir's CPU time per poll (user + system time of the `weir` process).
//!
//! Each round runs both modes for a few seconds, polling as fast as the server answers
//! (`interval = '0s'`); alternating order, median of 3 rounds.
//!
//! Writing back (the sink): rows of 10 neighbouring holding registers, every value new, fed
//! to the Modbus sink (driven by this process on a thread of its own, the server on another)
//! with coalesced writes (one function 16 per row) and with one write per value (function 6),
//! in the same run: values written per second and the sink thread's CPU time per value.
//!
//! Run: `cargo bench --bench modbus`.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::bench as common;
use weir_test_support::modbus_server;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_ticks, median, ticks_per_second};
use modbus_server::{ModbusServer, Shared, device, scattered_map};

const MEASURE: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

struct Measured {
    polls_per_s: f64,
    cpu_us_per_poll: f64,
}

fn start_weir(dir: &std::path::Path, port: u16, coalesce: bool) -> Child {
    let (columns, map, _) = scattered_map();
    let pipeline = format!(
        "CREATE SOURCE meters ({columns}, ts TIMESTAMP) WITH (connector = 'modbus',
            url = 'tcp://127.0.0.1:{port}', unit_id = '1', unit_column = 'unit',
            interval = '0s', coalesce = '{coalesce}', registers = '{}',
            event_time = 'ts');
         CREATE SINK out WITH (connector = 'stdout', format = 'ndjson');
         INSERT INTO out SELECT window_start, count(*) AS polls, sum(s448) AS checksum
         FROM TUMBLE(meters, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end;",
        map.join("; ")
    );
    std::fs::write(dir.join("pipeline.sql"), pipeline).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "pipeline.sql"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap()
}

fn measure(
    device: &Shared,
    port: u16,
    coalesce: bool,
    reads_per_poll: u64,
    tick_s: f64,
) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let mut weir = start_weir(dir.path(), port, coalesce);
    let log = dir.path().join("stderr.txt");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("modbus connected")
    {
        assert!(Instant::now() < deadline, "weir did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let requests = || device.lock().unwrap().requests;
    let (r0, c0, t0) = (requests(), cpu_ticks(weir.id()), Instant::now());
    std::thread::sleep(MEASURE);
    let (r1, c1, secs) = (requests(), cpu_ticks(weir.id()), t0.elapsed().as_secs_f64());
    let _ = Command::new("kill")
        .args(["-TERM", &weir.id().to_string()])
        .status();
    let _ = weir.wait();
    let polls = (r1 - r0) as f64 / reads_per_poll as f64;
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !stderr.contains("inputs skipped"),
        "requests failed during the bench:\n{stderr}"
    );
    Measured {
        polls_per_s: polls / secs,
        cpu_us_per_poll: (c1 - c0) as f64 / tick_s * 1e6 / polls,
    }
}

fn main() {
    let dev = device(&[1]);
    {
        let mut d = dev.lock().unwrap();
        d.count_only = true;
        let bank = d.banks.get_mut(&1).unwrap();
        for (a, w) in bank.holding.iter_mut().enumerate().take(450) {
            *w = a as u16;
        }
    }
    let server = ModbusServer::tcp(dev.clone());
    let (_, map, planned) = scattered_map();
    let registers: usize = map.len();
    let tick_s = ticks_per_second();
    let (mut coalesced, mut single) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut run = |c: bool| {
            if c {
                coalesced.push(measure(
                    &dev,
                    server.port,
                    true,
                    planned.len() as u64,
                    tick_s,
                ));
            } else {
                single.push(measure(&dev, server.port, false, registers as u64, tick_s));
            }
        };
        if round % 2 == 0 {
            run(true);
            run(false);
        } else {
            run(false);
            run(true);
        }
    }
    let report = |name: &str, m: &[Measured], reads: usize| {
        let polls = median(m.iter().map(|x| x.polls_per_s).collect());
        let cpu = median(m.iter().map(|x| x.cpu_us_per_poll).collect());
        println!(
            "{name:<28} {reads:>3} requests/poll  {polls:>9.0} polls/s  {:>11.0} registers/s  {cpu:>8.1} µs CPU/poll",
            polls * registers as f64
        );
        polls
    };
    println!(
        "modbus: {registers}-register map, one unit, local TCP server, median of {ROUNDS} rounds of {:?}",
        MEASURE
    );
    let c = report("coalesced (max_gap 16)", &coalesced, planned.len());
    let s = report("one request per register", &single, registers);
    println!("coalesced / one per register: {:.1}× the polls", c / s);
    writes(&dev, server.port, tick_s);
}

/// Registers of one row the write bench sets.
const ROW_REGISTERS: usize = 10;

/// CPU ticks (user + system) of the calling thread.
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Values written per second and CPU µs per value of the sink, coalesced or not.
fn write_rate(port: u16, coalesce: bool, tick_s: f64) -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let columns: Vec<String> = (0..ROW_REGISTERS).map(|k| format!("r{k} INT")).collect();
    let map: Vec<String> = (0..ROW_REGISTERS)
        .map(|k| format!("r{k} = holding {}", 500 + k))
        .collect();
    let (compiled, schema) = runtime.block_on(weir_test_support::harness::compile_sink(
        &columns.join(", "),
        &format!(
            "connector = 'modbus', url = 'tcp://127.0.0.1:{port}', dry_run = 'false', coalesce = '{coalesce}', registers = '{}'",
            map.join("; ")
        ),
        std::sync::Arc::new(weir_connectors::modbus::ModbusSinkFactory),
    ));
    let mut sink = compiled.sink;
    runtime
        .block_on(sink.start(weir_engine::connector::SinkStart {
            schema: Some(schema.clone()),
            ..Default::default()
        }))
        .unwrap();
    let row = |n: i32| {
        let cols: Vec<arrow::array::ArrayRef> = (0..ROW_REGISTERS as i32)
            .map(|k| {
                std::sync::Arc::new(arrow::array::Int32Array::from(vec![(n * 16 + k) % 60000]))
                    as arrow::array::ArrayRef
            })
            .collect();
        arrow::array::RecordBatch::try_new(schema.clone(), cols).unwrap()
    };
    runtime.block_on(sink.write(row(0))).unwrap();
    let (c0, t0) = (thread_cpu_ticks(), Instant::now());
    let mut rows = 0;
    while t0.elapsed() < MEASURE {
        rows += 1;
        runtime.block_on(sink.write(row(rows))).unwrap();
    }
    let (c1, secs) = (thread_cpu_ticks(), t0.elapsed().as_secs_f64());
    let values = rows as f64 * ROW_REGISTERS as f64;
    let written = compiled
        .telemetry
        .counts()
        .writes
        .get("written")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        written as f64,
        values + ROW_REGISTERS as f64,
        "every value written"
    );
    (values / secs, (c1 - c0) as f64 / tick_s * 1e6 / values)
}

fn writes(dev: &Shared, port: u16, tick_s: f64) {
    let before = dev.lock().unwrap().requests;
    let (mut coalesced, mut single) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for c in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let m = std::thread::spawn(move || write_rate(port, c, tick_s))
                .join()
                .unwrap();
            if c { coalesced.push(m) } else { single.push(m) }
        }
    }
    assert!(dev.lock().unwrap().requests > before);
    println!(
        "modbus sink: rows of {ROW_REGISTERS} neighbouring holding registers, each value new, local TCP server, median of {ROUNDS} rounds of {MEASURE:?}"
    );
    let report = |name: &str, m: &[(f64, f64)]| {
        let rate = median(m.iter().map(|x| x.0).collect());
        let cpu = median(m.iter().map(|x| x.1).collect());
        println!("{name:<34} {rate:>9.0} values/s  {cpu:>7.2} µs CPU/value (sink thread)");
        rate
    };
    let c = report("coalesced (one function 16 a row)", &coalesced);
    let s = report("one write per value (function 6)", &single);
    println!(
        "coalesced / one per value: {:.1}× the values written",
        c / s
    );
}
