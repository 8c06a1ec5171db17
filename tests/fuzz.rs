//! The fuzz targets without a fuzzer: each target's corpus (`fuzz/corpus/<target>/`, plus the
//! example pipelines for the pipeline targets) replayed through its entry point in
//! `weir_connectors::fuzz`, then a smoke run of random mutations of the corpus for
//! `WEIR_FUZZ_SMOKE_SECS` seconds (default 30) per target. An input that panics fails the
//! test and is saved under `target/fuzz-smoke-failures/` to reproduce.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The corpus of `target`: its committed inputs (and the example pipelines).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut dirs = vec![repo().join("fuzz/corpus").join(target)];
    if target.starts_with("pipeline") {
        dirs.push(repo().join("queries"));
    }
    let mut inputs = Vec::new();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        inputs.extend(files.iter().map(|f| std::fs::read(f).unwrap()));
    }
    assert!(!inputs.is_empty(), "no corpus for {target}");
    inputs
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn draw(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.draw() % n.max(1) as u64) as usize
    }
}

/// A random mutation of `input` (and maybe a piece of `other`).
fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.draw() as u8;
            }
            2 => v.insert(at, rng.draw() as u8),
            3 if at < v.len() => {
                let n = rng.below(v.len() - at) + 1;
                v.drain(at..at + n.min(16));
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from) + 1;
                v.splice(at..at, other[from..from + n.min(64)].iter().copied());
            }
            _ => {
                let interesting = [0u8, 0xff, 0x7f, 0x80, b'\'', b'(', b';', b'"'];
                v.insert(at, interesting[rng.below(interesting.len())]);
            }
        }
    }
    v
}

/// Runs `f` on `input`; a panic saves the input and fails the test.
fn run(target: &str, f: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| f(input)).is_err() {
        let dir = repo().join("target/fuzz-smoke-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{target}-{:016x}", fnv(input)));
        std::fs::write(&path, input).unwrap();
        panic!("{target} panicked on the input saved as {}", path.display());
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100000001b3)
    })
}

fn smoke_duration() -> Duration {
    let secs = std::env::var("WEIR_FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Replays the corpus of `target`, then mutates it for the smoke duration.
fn replay_and_smoke(target: &str) {
    let (_, f) = weir_connectors::fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let inputs = corpus(target);
    for input in &inputs {
        run(target, *f, input);
    }
    let mut rng = Rng(fnv(target.as_bytes()) | 1);
    let until = Instant::now() + smoke_duration();
    let mut runs = 0u64;
    while Instant::now() < until {
        let a = &inputs[rng.below(inputs.len())];
        let b = &inputs[rng.below(inputs.len())];
        run(target, *f, &mutate(a, b, &mut rng));
        runs += 1;
    }
    eprintln!("{target}: {} corpus inputs, {runs} mutations", inputs.len());
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let here = std::fs::read_to_string(repo().join("tests/fuzz.rs")).unwrap();
    for (name, _) in weir_connectors::fuzz::TARGETS {
        assert!(
            here.contains(&format!("\n    {name},\n")),
            "tests/fuzz.rs has no test for {name}"
        );
        assert!(Path::new(&repo().join("fuzz/fuzz_targets").join(format!("{name}.rs"))).exists());
        assert!(!corpus(name).is_empty());
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay_and_smoke(stringify!($name));
            }
        )*
    };
}

targets!(
    pipeline_file,
    pipeline_mutation,
    flight_statement,
    mqtt_json,
    mqtt_packets,
    sparkplug_payload,
    modbus_registers,
    modbus_response,
    opcua_variant,
    spill_file,
);
