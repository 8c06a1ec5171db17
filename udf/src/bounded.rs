//! DataFusion's functions whose result size comes from an argument — `repeat`, `lpad`,
//! `rpad`, `array_repeat`, `range`, `generate_series` — wrapped so that one value can never
//! be larger than [`MAX_VALUE_BYTES`] (text) or [`MAX_ELEMENTS`] (lists): `repeat('x', 1e9)`
//! fails for its row (which the engine then drops and counts) instead of asking for gigabytes.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// Largest text value these functions may make, in bytes.
pub const MAX_VALUE_BYTES: i64 = 1024 * 1024;
/// Most elements of a list value these functions may make.
pub const MAX_ELEMENTS: i64 = 128 * 1024;

/// How a function's result size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: `len(text) × n` bytes.
    Repeat,
    /// `lpad(text, n, ...)`, `rpad(...)`: `n` characters.
    Pad,
    /// `array_repeat(element, n)`: `n` elements.
    Count,
    /// `range(start, stop[, step])`, `generate_series(...)`: `(stop - start) / step` elements.
    Range,
}

/// A DataFusion function with a bound on its result size.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    growth: Growth,
}

/// The integer arguments of a call, row by row.
fn ints(arg: &ColumnarValue, rows: usize) -> Result<Vec<Option<i64>>> {
    let a: ArrayRef = arg.to_array(rows)?;
    let a = datafusion::arrow::compute::cast(&a, &DataType::Int64)?;
    Ok(a.as_primitive::<Int64Type>().iter().collect())
}

/// The byte lengths of a text argument, row by row.
fn text_lengths(arg: &ColumnarValue, rows: usize) -> Result<Vec<Option<i64>>> {
    let a = arg.to_array(rows)?;
    let a = datafusion::arrow::compute::cast(&a, &DataType::Utf8)?;
    Ok(a.as_string::<i32>()
        .iter()
        .map(|s| s.map(|s| s.len() as i64))
        .collect())
}

impl Bounded {
    /// Refuses the call when any row would make a value over the limit.
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows;
        let a = &args.args;
        let name = self.inner.name();
        let over = |size: i64, limit: i64, unit: &str| {
            exec_err!(
                "{name}: a value of {size} {unit} is over the limit of {limit} {unit} per value"
            )
        };
        match self.growth {
            Growth::Repeat if a.len() >= 2 => {
                let lengths = text_lengths(&a[0], rows)?;
                for (len, n) in lengths.into_iter().zip(ints(&a[1], rows)?) {
                    let size = len.unwrap_or(0).saturating_mul(n.unwrap_or(0).max(0));
                    if size > MAX_VALUE_BYTES {
                        return over(size, MAX_VALUE_BYTES, "bytes");
                    }
                }
            }
            Growth::Pad if a.len() >= 2 => {
                for n in ints(&a[1], rows)?.into_iter().flatten() {
                    // a character is at most 4 bytes
                    if n.saturating_mul(4) > MAX_VALUE_BYTES {
                        return over(n, MAX_VALUE_BYTES / 4, "characters");
                    }
                }
            }
            Growth::Count if a.len() >= 2 => {
                for n in ints(&a[1], rows)?.into_iter().flatten() {
                    if n > MAX_ELEMENTS {
                        return over(n, MAX_ELEMENTS, "elements");
                    }
                }
            }
            Growth::Range if !a.is_empty() && a.iter().all(is_integer) => {
                let (start, stop, step) = match a.len() {
                    1 => (None, ints(&a[0], rows)?, None),
                    2 => (Some(ints(&a[0], rows)?), ints(&a[1], rows)?, None),
                    _ => (
                        Some(ints(&a[0], rows)?),
                        ints(&a[1], rows)?,
                        Some(ints(&a[2], rows)?),
                    ),
                };
                for r in 0..rows {
                    let from = start.as_ref().map_or(Some(0), |s| s[r]).unwrap_or(0);
                    let to = stop[r].unwrap_or(0);
                    let by = step.as_ref().and_then(|s| s[r]).unwrap_or(1);
                    let n = if by == 0 {
                        0
                    } else {
                        (i128::from(to) - i128::from(from)) / i128::from(by)
                    };
                    if n > i128::from(MAX_ELEMENTS) {
                        return over(n as i64, MAX_ELEMENTS, "elements");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn is_integer(a: &ColumnarValue) -> bool {
    a.data_type().is_integer()
}

#[warn(clippy::missing_trait_methods)]
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn datafusion::common::ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn with_updated_config(&self, config: &datafusion::config::ConfigOptions) -> Option<ScalarUDF> {
        let inner = self.inner.with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: Arc::clone(inner.inner()).into(),
            growth: self.growth,
        }))
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<datafusion::logical_expr::preimage::PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<datafusion::logical_expr::StructFieldMapping> {
        self.inner.struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(
        &self,
        args: &[datafusion::logical_expr::ExpressionPlacement],
    ) -> datafusion::logical_expr::ExpressionPlacement {
        self.inner.placement(args)
    }
}

/// Replaces DataFusion's size-making functions in `ctx` by their bounded versions.
pub fn register(ctx: &SessionContext) {
    for (name, growth) in [
        ("repeat", Growth::Repeat),
        ("lpad", Growth::Pad),
        ("rpad", Growth::Pad),
        ("array_repeat", Growth::Count),
        ("range", Growth::Range),
        ("generate_series", Growth::Range),
    ] {
        if let Ok(udf) = ctx.udf(name) {
            let bounded = Bounded {
                inner: Arc::clone(udf.inner()).into(),
                growth,
            };
            ctx.register_udf(ScalarUDF::new_from_impl(bounded));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sql: &str) -> Result<usize> {
        let ctx = SessionContext::new();
        register(&ctx);
        let rows = ctx.sql(sql).await?.collect().await?;
        Ok(rows.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn values_over_the_limit_fail_small_ones_work() {
        assert_eq!(
            run("SELECT repeat('ab', 10), lpad('x', 20), array_repeat(1, 5), range(10)")
                .await
                .unwrap(),
            1
        );
        for sql in [
            "SELECT repeat(s, 1000000000) FROM (VALUES ('x')) t(s)",
            "SELECT lpad(s, 1000000000) FROM (VALUES ('x')) t(s)",
            "SELECT rpad(s, 500000, '-') FROM (VALUES ('x')) t(s)",
            "SELECT array_repeat(s, 1000000000) FROM (VALUES (1)) t(s)",
            "SELECT range(s, 1000000000) FROM (VALUES (1)) t(s)",
            "SELECT generate_series(s, 1000000000, 2) FROM (VALUES (1)) t(s)",
        ] {
            let e = run(sql).await.unwrap_err().to_string();
            assert!(e.contains("over the limit"), "{sql}: {e}");
        }
    }
}
