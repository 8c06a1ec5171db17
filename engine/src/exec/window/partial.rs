//! `window_partial()`: an aggregate a windowed query selects to see whether a result row is
//! partial — its window was emitted early by the `emit_early` state policy, so the window may
//! have emitted (or may still emit) other rows for the same key. The window operators set
//! its value when they emit; as an ordinary aggregate it is always false.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, Signature, Volatility, lit,
};

/// The function's name.
pub const WINDOW_PARTIAL: &str = "window_partial";

/// `window_partial()`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowPartial {
    signature: Signature,
}

/// The `window_partial()` aggregate, for registering with a session.
pub fn window_partial() -> AggregateUDF {
    AggregateUDF::from(WindowPartial {
        // user-defined so that the constant argument the physical planner is given passes
        signature: Signature::user_defined(Volatility::Volatile),
    })
}

impl AggregateUDFImpl for WindowPartial {
    fn name(&self) -> &str {
        WINDOW_PARTIAL
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [] | [DataType::Boolean] => Ok(args.to_vec()),
            _ => datafusion::common::plan_err!(
                "window_partial() takes no arguments: it says whether a window's row is partial"
            ),
        }
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(NotPartial))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[partial]", args.name),
            DataType::Boolean,
            true,
        ))])
    }
}

/// `e` ready for DataFusion's physical aggregate builder, which takes no aggregate without
/// arguments: `window_partial()` gets a constant one (which it ignores).
pub fn with_marker_argument(e: &Expr) -> Cow<'_, Expr> {
    match e {
        Expr::AggregateFunction(f)
            if f.func.name() == WINDOW_PARTIAL && f.params.args.is_empty() =>
        {
            let mut f = f.clone();
            f.params.args = vec![lit(true)];
            Cow::Owned(Expr::AggregateFunction(f))
        }
        Expr::Alias(a) => match with_marker_argument(&a.expr) {
            Cow::Owned(inner) => {
                let mut a = a.clone();
                a.expr = Box::new(inner);
                Cow::Owned(Expr::Alias(a))
            }
            Cow::Borrowed(_) => Cow::Borrowed(e),
        },
        _ => Cow::Borrowed(e),
    }
}

/// The value outside the window operators: never partial.
#[derive(Debug)]
struct NotPartial;

impl Accumulator for NotPartial {
    fn update_batch(&mut self, _values: &[ArrayRef]) -> Result<()> {
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Boolean(Some(false)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Boolean(Some(false))])
    }

    fn merge_batch(&mut self, _states: &[ArrayRef]) -> Result<()> {
        Ok(())
    }
}
