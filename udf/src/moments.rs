//! Mergeable moment statistics: count, mean, central moments M2..M4 (Pébay's pairwise
//! update), extremes, Σ|x| and Σx². Every moment-based function is a view of this state, so
//! they all merge exactly across batches, panes and partial aggregations.

/// Partial state of the moment-based functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    /// Number of values.
    pub n: f64,
    /// Mean.
    pub mean: f64,
    /// Σ(x − mean)².
    pub m2: f64,
    /// Σ(x − mean)³.
    pub m3: f64,
    /// Σ(x − mean)⁴.
    pub m4: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Σ|x|.
    pub sum_abs: f64,
    /// Σx².
    pub sum_sq: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            n: 0.0,
            mean: 0.0,
            m2: 0.0,
            m3: 0.0,
            m4: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum_abs: 0.0,
            sum_sq: 0.0,
        }
    }
}

impl Moments {
    /// Number of state fields, in the order of [`Moments::to_array`].
    pub const FIELDS: [&'static str; 9] = [
        "n", "mean", "m2", "m3", "m4", "min", "max", "sum_abs", "sum_sq",
    ];

    /// The state as an array (the order of [`Moments::FIELDS`]).
    pub fn to_array(&self) -> [f64; 9] {
        [
            self.n,
            self.mean,
            self.m2,
            self.m3,
            self.m4,
            self.min,
            self.max,
            self.sum_abs,
            self.sum_sq,
        ]
    }

    /// The state from an array in the order of [`Moments::FIELDS`].
    pub fn from_array(a: [f64; 9]) -> Self {
        Self {
            n: a[0],
            mean: a[1],
            m2: a[2],
            m3: a[3],
            m4: a[4],
            min: a[5],
            max: a[6],
            sum_abs: a[7],
            sum_sq: a[8],
        }
    }

    /// Moments of a slice, computed in two passes (mean first) for accuracy.
    pub fn of(values: impl Iterator<Item = f64> + Clone) -> Self {
        let mut s = Moments::default();
        for x in values.clone() {
            s.n += 1.0;
            s.mean += x;
            s.min = s.min.min(x);
            s.max = s.max.max(x);
            s.sum_abs += x.abs();
            s.sum_sq += x * x;
        }
        if s.n == 0.0 {
            return s;
        }
        s.mean /= s.n;
        for x in values {
            let d = x - s.mean;
            let d2 = d * d;
            s.m2 += d2;
            s.m3 += d2 * d;
            s.m4 += d2 * d2;
        }
        s
    }

    /// Merges `b` into `self` (Pébay 2008, pairwise formulas for central moments).
    pub fn merge(&mut self, b: &Moments) {
        if b.n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            *self = *b;
            return;
        }
        let a = *self;
        let n = a.n + b.n;
        let d = b.mean - a.mean;
        let d2 = d * d;
        let (na, nb) = (a.n, b.n);
        self.n = n;
        self.mean = a.mean + d * nb / n;
        self.m2 = a.m2 + b.m2 + d2 * na * nb / n;
        self.m3 = a.m3
            + b.m3
            + d2 * d * na * nb * (na - nb) / (n * n)
            + 3.0 * d * (na * b.m2 - nb * a.m2) / n;
        self.m4 = a.m4
            + b.m4
            + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n)
            + 6.0 * d2 * (na * na * b.m2 + nb * nb * a.m2) / (n * n)
            + 4.0 * d * (na * b.m3 - nb * a.m3) / n;
        self.min = a.min.min(b.min);
        self.max = a.max.max(b.max);
        self.sum_abs = a.sum_abs + b.sum_abs;
        self.sum_sq = a.sum_sq + b.sum_sq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_one_pass() {
        let xs: Vec<f64> = (0..1000)
            .map(|i| ((i * 37 % 101) as f64).sin() * 3.0 + 60.0)
            .collect();
        let whole = Moments::of(xs.iter().copied());
        let mut merged = Moments::default();
        for chunk in xs.chunks(7) {
            merged.merge(&Moments::of(chunk.iter().copied()));
        }
        for (a, b) in whole.to_array().iter().zip(merged.to_array()) {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}
