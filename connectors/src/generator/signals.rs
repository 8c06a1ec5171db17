//! Synthetic plant signals for the generator: vibration, temperature, current, with faults.

use rand::Rng;
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A fault injected on a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bearing wear: vibration amplitude grows and impacts appear (kurtosis, crest factor).
    Bearing,
    /// Cooling failure: temperature drifts upwards.
    Overheat,
    /// Mechanical overload: motor current and power 50% high, current noisier.
    Overload,
    /// The machine stops sending after its first minute (a dead sensor or gateway).
    Silent,
}

impl Fault {
    /// Parses a fault name.
    pub fn parse(s: &str) -> Option<Fault> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bearing" => Some(Fault::Bearing),
            "overheat" => Some(Fault::Overheat),
            "overload" => Some(Fault::Overload),
            "silent" => Some(Fault::Silent),
            _ => None,
        }
    }
}

/// What kind of sensor a name denotes, by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    /// `vib*`: vibration velocity (mm/s), a 13 Hz tone plus noise.
    Vibration,
    /// `temp*`: temperature (°C) around 60 with a slow cycle.
    Temperature,
    /// `current*`: motor current (A) around 12.
    Current,
    /// `power*`: active power (kW) around 40 with a 5-minute load cycle.
    Power,
    /// anything else: a slow sine around 1.
    Generic,
}

impl SensorKind {
    /// The kind of sensor `name`.
    pub fn of(name: &str) -> SensorKind {
        let n = name.to_ascii_lowercase();
        if n.starts_with("vib") {
            SensorKind::Vibration
        } else if n.starts_with("temp") {
            SensorKind::Temperature
        } else if n.starts_with("current") {
            SensorKind::Current
        } else if n.starts_with("power") {
            SensorKind::Power
        } else {
            SensorKind::Generic
        }
    }
}

/// One sample of `kind` at `t` seconds after the start, `n` being the sample index of this
/// sensor, on a machine with `faults`.
pub fn sample(
    kind: SensorKind,
    t: f64,
    n: u64,
    faults: &[Fault],
    rng: &mut Xoshiro256PlusPlus,
    noise: &Normal<f64>,
) -> f64 {
    let tau = std::f64::consts::TAU;
    let has = |f: Fault| faults.contains(&f);
    match kind {
        SensorKind::Vibration => {
            let mut amp = 1.0;
            let mut v = 0.0;
            if has(Fault::Bearing) {
                amp *= (1.0 + t / 60.0).min(4.0);
                if n.is_multiple_of(50) {
                    v += if rng.random_bool(0.5) { 6.0 } else { -6.0 } * amp;
                }
            }
            v + amp * (tau * 13.0 * t).sin() + 0.05 * amp * noise.sample(rng)
        }
        SensorKind::Temperature => {
            let drift = if has(Fault::Overheat) { 0.05 * t } else { 0.0 };
            60.0 + 2.0 * (tau * t / 600.0).sin() + drift + 0.2 * noise.sample(rng)
        }
        SensorKind::Current => {
            let (base, sd) = if has(Fault::Overload) {
                (18.0, 0.9)
            } else {
                (12.0, 0.3)
            };
            base + sd * noise.sample(rng)
        }
        SensorKind::Power => {
            let load = if has(Fault::Overload) { 1.5 } else { 1.0 };
            load * (40.0 + 8.0 * (tau * t / 300.0).sin()) + 0.5 * noise.sample(rng)
        }
        SensorKind::Generic => 1.0 + 0.5 * (tau * t / 60.0).sin() + 0.05 * noise.sample(rng),
    }
}
