//! Constant arguments that can never work, found before anything runs: `weir check` reports
//! them at the call instead of every batch failing at run time.

use datafusion::common::ScalarValue;

use crate::across_windows::RunningKind;
use crate::iso10816::boundaries;

fn number(v: &Option<ScalarValue>) -> Option<f64> {
    let v = v.as_ref()?;
    if v.is_null() {
        return None;
    }
    match v
        .cast_to(&datafusion::arrow::datatypes::DataType::Float64)
        .ok()?
    {
        ScalarValue::Float64(x) => x,
        _ => None,
    }
}

fn text(v: &Option<ScalarValue>) -> Option<String> {
    match v.as_ref()? {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.clone(),
        _ => None,
    }
}

/// Checks the constant arguments of a call of `function` (`None` for arguments that are not
/// constants): the message of what can never work, for the functions this crate adds.
pub fn check_constants(function: &str, args: &[Option<ScalarValue>]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).cloned().flatten();
    let num = |i: usize| number(&arg(i));
    match function {
        "ewma" | "zscore" => {
            let kind = if function == "ewma" {
                RunningKind::Ewma
            } else {
                RunningKind::Zscore
            };
            match num(1) {
                Some(p) => kind.start(p).map(|_| ()).map_err(|e| e.strip_backtrace()),
                None => Ok(()),
            }
        }
        "band_energy" | "dominant_frequency" => {
            if let Some(rate) = num(1)
                && !(rate > 0.0 && rate.is_finite())
            {
                return Err(format!(
                    "{function}: sample_rate_hz must be a positive number of samples per second, got {rate}"
                ));
            }
            if function == "band_energy"
                && let (Some(low), Some(high)) = (num(2), num(3))
            {
                if !(low >= 0.0 && low.is_finite() && high.is_finite()) {
                    return Err(format!(
                        "band_energy: low_hz and high_hz must be frequencies ≥ 0, got {low} and {high}"
                    ));
                }
                if low > high {
                    return Err(format!(
                        "band_energy: low_hz ({low}) is above high_hz ({high}): the band is empty"
                    ));
                }
            }
            Ok(())
        }
        "iso10816_zone" => match text(&arg(1)) {
            Some(class) if boundaries(&class).is_none() => Err(format!(
                "iso10816_zone: unknown machine class '{class}' (use group1_rigid, group1_flexible, group2_rigid or group2_flexible)"
            )),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> Option<ScalarValue> {
        Some(ScalarValue::Float64(Some(v)))
    }

    #[test]
    fn impossible_constants_are_named() {
        assert!(check_constants("ewma", &[None, f(0.3)]).is_ok());
        assert!(
            check_constants("ewma", &[None, f(2.0)])
                .unwrap_err()
                .contains("alpha")
        );
        assert!(check_constants("ewma", &[None, f(f64::NAN)]).is_err());
        assert!(check_constants("ewma", &[None, f(-0.5)]).is_err());
        assert!(check_constants("zscore", &[None, Some(ScalarValue::Int64(Some(0)))]).is_err());
        assert!(check_constants("zscore", &[None, Some(ScalarValue::Int64(Some(10)))]).is_ok());
        assert!(check_constants("band_energy", &[None, f(0.0), f(1.0), f(2.0)]).is_err());
        assert!(
            check_constants("band_energy", &[None, f(100.0), f(20.0), f(10.0)])
                .unwrap_err()
                .contains("the band is empty")
        );
        assert!(check_constants("band_energy", &[None, f(100.0), f(10.0), f(20.0)]).is_ok());
        assert!(check_constants("dominant_frequency", &[None, f(-1.0)]).is_err());
        let class = |c: &str| Some(ScalarValue::Utf8(Some(c.into())));
        assert!(check_constants("iso10816_zone", &[None, class("group1_rigid")]).is_ok());
        assert!(check_constants("iso10816_zone", &[None, class("group9")]).is_err());
        assert!(
            check_constants("ewma", &[None, None]).is_ok(),
            "not a constant"
        );
        assert!(check_constants("avg", &[None, f(9.0)]).is_ok());
    }
}
