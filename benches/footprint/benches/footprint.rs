//! Footprint of built `weir` binaries, for sizing edge nodes and the Kubernetes manifests:
//! binary size, container image size (when deploy/build-image.sh has built it), start-up
//! time until /readyz answers 200, resident memory (all of it, and the anonymous part) idle
//! and with the demo pipeline's generator at 100,000 rows/s, and the CPU used.
//!
//! It measures every binary `benches/footprint/build.sh` left under target/footprint (one per
//! feature set and architecture), else target/release/weir, else WEIR_BIN. Binaries of
//! another architecture run the demo under qemu-user (Debian's qemu-user-static, with the
//! cross toolchain's libraries), which must end with the same summary as this machine's.
//!
//!   benches/footprint/build.sh && cargo bench -p weir-footprint
//!   WEIR_BIN=/path/to/weir cargo bench -p weir-footprint
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{free_port, request};

const RUNS: usize = 7;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A field of /proc/PID/status in bytes.
fn proc_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| {
            l[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |k| k * 1024)
}

/// User + system CPU seconds of PID.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &s[s.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Weir {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Weir {
    fn start(bin: &Path, pipeline: &str, tag: &str) -> Weir {
        let dir = std::env::temp_dir().join(format!("weir-footprint-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.sql"), pipeline).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(["run", "p.sql", "--http-addr", &format!("127.0.0.1:{port}")])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weir");
        Weir {
            child,
            port,
            _dir: dir,
        }
    }

    /// Waits for /readyz = 200; the time it took from `since`.
    fn ready(&mut self, since: Instant) -> Duration {
        loop {
            if let Some((200, _)) = request(self.port, "GET", "/readyz") {
                return since.elapsed();
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("weir exited: {s}");
            }
            assert!(since.elapsed() < Duration::from_secs(60), "never ready");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Resident memory of a process, MB: all of it, and the anonymous part (heap and stacks,
/// private to the process; the rest is the binary's pages from the page cache, shared and
/// reclaimable).
#[derive(Clone, Copy)]
struct Memory {
    rss: f64,
    anon: f64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        Memory {
            rss: proc_kib(pid, "VmRSS:") as f64 / 1e6,
            anon: proc_kib(pid, "RssAnon:") as f64 / 1e6,
        }
    }

    fn median(v: &[Memory]) -> Memory {
        Memory {
            rss: median(v.iter().map(|m| m.rss).collect()),
            anon: median(v.iter().map(|m| m.anon).collect()),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median RSS {:.1} MB, of which anonymous {:.1} MB (the rest: the binary's pages)",
            self.rss, self.anon
        )
    }
}

/// The demo pipeline running for ever at `rate` rows/s of wall time, its event time
/// following the wall clock (no `start`, and the generator's default interval: one sample
/// of each series per machines × sensors / rate).
fn demo_at(rate: u64) -> String {
    let demo = std::fs::read_to_string(root().join("queries/demo.sql")).unwrap();
    let dropped = ["duration", "start", "interval"];
    demo.lines()
        .filter(|l| !dropped.iter().any(|d| l.trim_start().starts_with(d)))
        .map(|l| {
            if l.trim_start().starts_with("rate") {
                format!("    rate = '{rate}',")
            } else if l.contains("connector = 'stdout'") {
                // the console would print to /dev/null anyway; keep the pipeline's work
                l.replace("format = 'table'", "format = 'ndjson'")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn image_size() -> Option<String> {
    let out = Command::new("buildah")
        .args([
            "--storage-driver",
            "vfs",
            "images",
            "--format",
            "{{.Size}}",
            "localhost/weir:dev",
        ])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// A binary to measure.
struct Binary {
    /// `<triple>/weir-<feature set>`, or the path given.
    label: String,
    path: PathBuf,
    /// How to run it here when it is for another architecture (qemu-user), else empty.
    emulator: Vec<String>,
}

/// The qemu-user command that runs binaries of `triple` here, with the cross toolchain's
/// libraries; empty for this machine's own architecture.
fn emulator(triple: &str) -> Option<Vec<String>> {
    if triple.starts_with(std::env::consts::ARCH) {
        return Some(Vec::new());
    }
    let (qemu, libs) = match triple {
        "armv7-unknown-linux-gnueabihf" => ("qemu-arm-static", "/usr/arm-linux-gnueabihf"),
        "aarch64-unknown-linux-gnu" => ("qemu-aarch64-static", "/usr/aarch64-linux-gnu"),
        _ => return None,
    };
    Some(vec![qemu.into(), "-L".into(), libs.into()])
}

/// WEIR_BIN, else what build.sh left under target/footprint, else target/release/weir.
fn binaries() -> Vec<Binary> {
    let given = |path: PathBuf| Binary {
        label: path.display().to_string(),
        path,
        emulator: Vec::new(),
    };
    if let Some(b) = std::env::var_os("WEIR_BIN") {
        return vec![given(PathBuf::from(b))];
    }
    let mut found = Vec::new();
    if let Ok(triples) = std::fs::read_dir(root().join("target/footprint")) {
        for t in triples.flatten() {
            let triple = t.file_name().to_string_lossy().to_string();
            let Some(emulator) = emulator(&triple) else {
                println!("{triple}: no way to run it here, skipped");
                continue;
            };
            for b in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
                let name = b.file_name().to_string_lossy().to_string();
                if name.starts_with("weir-") {
                    found.push(Binary {
                        label: format!("{triple}/{name}"),
                        path: b.path(),
                        emulator: emulator.clone(),
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.label.cmp(&b.label));
    if found.is_empty() {
        found.push(given(root().join("target/release/weir")));
    }
    found
}

/// The demo pipeline run to its end: the summary's source and pipeline lines (rows in,
/// rows out, windows emitted), which do not depend on the machine.
fn demo_summary(b: &Binary) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("weir-footprint-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root().join("queries/demo.sql"), dir.join("demo.sql")).unwrap();
    let mut cmd = match b.emulator.split_first() {
        Some((qemu, args)) => {
            let mut c = Command::new(qemu);
            c.args(args).arg(&b.path);
            c
        }
        None => Command::new(&b.path),
    };
    let t = Instant::now();
    let out = cmd
        .args(["run", "demo.sql"])
        .current_dir(&dir)
        .output()
        .expect("run the demo");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: the demo failed: {err}", b.label);
    let summary: Vec<String> = err
        .lines()
        .filter(|l| l.starts_with("  source ") || l.starts_with("  pipeline "))
        .map(str::to_string)
        .collect();
    assert!(!summary.is_empty(), "{}: no summary in {err}", b.label);
    println!(
        "{}: the demo ran in {:.1} s{}",
        b.label,
        t.elapsed().as_secs_f64(),
        if b.emulator.is_empty() {
            String::new()
        } else {
            format!(" under {}", b.emulator[0])
        }
    );
    summary
}

fn main() {
    let bins = binaries();
    for b in &bins {
        if !b.path.exists() {
            eprintln!(
                "{} is missing: run benches/footprint/build.sh or `cargo build --release` first (or set WEIR_BIN)",
                b.path.display()
            );
            std::process::exit(2);
        }
    }
    for b in &bins {
        let size = std::fs::metadata(&b.path).unwrap().len();
        println!(
            "binary {}: {:.1} MB ({size} bytes)",
            b.label,
            size as f64 / 1e6
        );
    }
    match image_size() {
        Some(s) => println!("container image localhost/weir:dev: {s}"),
        None => println!("container image: not built here (deploy/build-image.sh builds it)"),
    }
    // every architecture's demo ends as this machine's does
    let mut reference: Option<(String, Vec<String>)> = None;
    for b in bins.iter().filter(|b| b.emulator.is_empty()) {
        let summary = demo_summary(b);
        match &reference {
            None => reference = Some((b.label.clone(), summary)),
            Some((label, r)) => assert_eq!(&summary, r, "{} and {label} differ", b.label),
        }
    }
    for b in bins.iter().filter(|b| !b.emulator.is_empty()) {
        let summary = demo_summary(b);
        let (label, r) = reference
            .as_ref()
            .expect("a binary of this machine to compare with");
        assert_eq!(&summary, r, "{} and {label} differ", b.label);
        println!("{}: the demo's summary equals {label}'s", b.label);
    }
    for b in bins.iter().filter(|b| b.emulator.is_empty()) {
        refuses_what_it_lacks(b);
    }
    // the engine's speed as built: the demo's windows over 4.8 M generated rows, as fast as
    // they come, each binary in turn (median of 3; ratio to the first)
    let native: Vec<&Binary> = bins.iter().filter(|b| b.emulator.is_empty()).collect();
    let mut rates = vec![Vec::new(); native.len()];
    for _ in 0..3 {
        for (i, b) in native.iter().enumerate() {
            rates[i].push(max_rate(&b.path));
        }
    }
    let base = median(rates[0].clone());
    for (b, r) in native.iter().zip(rates) {
        let r = median(r);
        println!(
            "{}: demo pipeline at full speed {:.0} rows/s (median of 3), {:.2}x {}",
            b.label,
            r,
            r / base,
            native[0].label
        );
    }
    for b in &native {
        println!("\n{}:", b.label);
        measure(&b.path);
    }
}

/// `weir check` of the example pipeline of each optional source connector: the ones
/// `--version` lists compile, the others are refused at the connector's name with the
/// feature that brings it.
fn refuses_what_it_lacks(b: &Binary) {
    let version = Command::new(&b.path).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    println!("{}: {}", b.label, version.trim());
    let Some((_, listed)) = version.split_once("(features: ") else {
        println!(
            "{}: no feature list (built before features): not checked",
            b.label
        );
        return;
    };
    let features: Vec<&str> = listed.trim().trim_end_matches(')').split(", ").collect();
    for (connector, file) in [
        ("mqtt", "mqtt_gateway.sql"),
        ("modbus", "power_meter_modbus.sql"),
        ("opcua", "line_opcua.sql"),
    ] {
        let path = root().join("queries").join(file);
        let out = Command::new(&b.path)
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if features.contains(&connector) {
            assert!(out.status.success(), "{}: {file}: {err}", b.label);
            continue;
        }
        // where the file names the connector (computed here, not by weir)
        let sql = std::fs::read_to_string(&path).unwrap();
        let (line, col) = sql
            .lines()
            .enumerate()
            .find_map(|(i, l)| {
                let at = l.find(&format!("'{connector}'"))?;
                (l.trim_start().starts_with("connector")).then_some((i + 1, at + 1))
            })
            .unwrap();
        let expected = format!(
            ":{line}:{col}: connector '{connector}' is not in this build (built without feature \"{connector}\")"
        );
        assert!(
            !out.status.success() && err.contains(&expected),
            "{}: {err:?} lacks {expected:?}",
            b.label
        );
        println!("{}: {file}{expected}", b.label);
    }
}

/// Rows per second of wall time of the demo pipeline over 200 machines × 4 sensors × 100 Hz ×
/// 60 s of event time (4.8 M rows), its generator unthrottled.
fn max_rate(bin: &Path) -> f64 {
    let demo = std::fs::read_to_string(root().join("queries/demo.sql")).unwrap();
    let pipeline: String = demo
        .lines()
        .map(|l| match l.trim_start() {
            t if t.starts_with("rate") => "    rate = 'max',".to_string(),
            t if t.starts_with("machines") => "    machines = '200',".to_string(),
            t if t.starts_with("duration") => "    duration = '60s',".to_string(),
            _ => l.replace("format = 'table'", "format = 'ndjson'"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = std::env::temp_dir().join(format!("weir-footprint-rate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.sql"), pipeline).unwrap();
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["run", "p.sql"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .output()
        .expect("run weir");
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let rows: f64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("  source telemetry: ")?
                .strip_suffix(" rows")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no source summary in {err}"));
    assert_eq!(rows, 4_800_000.0, "{err}");
    rows / secs
}

/// Start-up, idle and loaded memory and CPU of the binary at `bin`.
fn measure(bin: &Path) {
    // start-up until /readyz = 200, idle memory (1 row/s) after it settles
    let idle_pipeline = demo_at(1);
    let mut startup = Vec::new();
    let mut idle_rss = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        let mut w = Weir::start(bin, &idle_pipeline, &format!("idle{i}"));
        startup.push(w.ready(t).as_secs_f64() * 1e3);
        if i < 3 {
            std::thread::sleep(Duration::from_secs(3));
            idle_rss.push(Memory::of(w.child.id()));
        }
    }
    println!(
        "start-up to ready: median {:.1} ms (min {:.1}, max {:.1}) over {RUNS} starts",
        median(startup.clone()),
        startup.iter().copied().fold(f64::MAX, f64::min),
        startup.iter().copied().fold(0.0, f64::max)
    );
    let idle = Memory::median(&idle_rss);
    println!("idle (demo pipeline at 1 row/s, after 3 s): {idle}");

    // loaded: the demo pipeline's generator at 100,000 rows/s for 12 s
    let mut w = Weir::start(bin, &demo_at(100_000), "loaded");
    w.ready(Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let pid = w.child.id();
    let rows = |w: &Weir| {
        counter(
            &request(w.port, "GET", "/metrics").unwrap().1,
            "weir_source_rows_total",
        )
    };
    let (rows0, cpu0, t0) = (rows(&w), cpu_seconds(pid), Instant::now());
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(10) {
        samples.push(Memory::of(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = (rows(&w) - rows0) / secs;
    let cores = (cpu_seconds(pid) - cpu0) / secs;
    let peak = proc_kib(pid, "VmHWM:") as f64 / 1e6;
    let loaded = Memory::median(&samples);
    let max_anon = samples.iter().map(|m| m.anon).fold(0.0, f64::max);
    println!(
        "loaded (demo pipeline, {rate:.0} rows/s achieved): {loaded}; largest anonymous {max_anon:.1} MB, peak RSS (VmHWM) {peak:.1} MB; CPU {cores:.2} cores"
    );
    println!(
        "loaded / idle: RSS {:.2}x, anonymous {:.2}x",
        loaded.rss / idle.rss,
        loaded.anon / idle.anon
    );
}
