//! The state budget: how many bytes of window state a pipeline, and all of them together,
//! may hold, and what a pipeline does when its state reaches the budget.
//!
//! State is measured with the accumulators' and group tables' own size accounting (the
//! figure DataFusion's memory pools use), after every batch. A pipeline over its own
//! budget (`max_state_bytes` of its view), or the largest pipelines while the process is
//! over `--max-state-bytes`, apply their policy:
//! - `emit_early`: the oldest open windows are emitted now and their state freed; their rows
//!   are partial (`window_partial()` is true) and a window flushed early may emit again;
//! - `drop_new_keys`: rows whose group key has no state in their window yet are dropped and
//!   counted, until the state is back under 90% of the budget;
//! - `fail`: the pipeline stops (its state is dropped, its output ends); the others go on.

use crate::parse::options::{OptionSpec, OptionType, parse_size};

/// What a pipeline does when its window state reaches its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatePolicy {
    /// Emit the oldest open windows now, marked partial.
    #[default]
    EmitEarly,
    /// Drop rows of group keys that have no state yet.
    DropNewKeys,
    /// Stop the pipeline.
    Fail,
}

impl StatePolicy {
    /// Every policy's name, as written in options.
    pub const NAMES: &'static [&'static str] = &["emit_early", "drop_new_keys", "fail"];

    /// The policy called `name` (case-insensitive).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "emit_early" => Ok(StatePolicy::EmitEarly),
            "drop_new_keys" => Ok(StatePolicy::DropNewKeys),
            "fail" => Ok(StatePolicy::Fail),
            other => Err(format!(
                "unknown state policy '{other}': expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// The policy's name.
    pub fn label(self) -> &'static str {
        match self {
            StatePolicy::EmitEarly => "emit_early",
            StatePolicy::DropNewKeys => "drop_new_keys",
            StatePolicy::Fail => "fail",
        }
    }
}

/// `max_state_bytes` of `CREATE VIEW ... WITH (...)`.
pub const MAX_STATE_BYTES: OptionSpec = OptionSpec::new(
    "max_state_bytes",
    OptionType::Bytes,
    "window state this view may hold; past it its state_policy applies (the process-wide --max-state-bytes applies as well)",
);

/// `state_policy` of `CREATE VIEW ... WITH (...)`.
pub const STATE_POLICY: OptionSpec = OptionSpec::new(
    "state_policy",
    OptionType::Choice(StatePolicy::NAMES),
    "what the view does when its state reaches max_state_bytes or the process reaches --max-state-bytes: emit_early (emit the oldest open windows now, window_partial() true), drop_new_keys (drop rows of keys without state, counted), fail (stop this view)",
)
.derived("--state-policy");

/// `weir functions`' line for `window_partial()`, the mark of rows `emit_early` emitted.
pub const WINDOW_PARTIAL_DOC: (&str, &str) = (
    "window_partial()",
    "aggregate: true for rows of a window emitted early by the emit_early state policy (partial results)",
);

/// The options a view takes.
pub const VIEW_OPTIONS: &[OptionSpec] = &[MAX_STATE_BYTES, STATE_POLICY];

/// What the process allows: `--max-state-bytes` and `--state-policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateLimits {
    /// Window state all pipelines together may hold (None: no process-wide budget).
    pub max_bytes: Option<usize>,
    /// The policy of pipelines that do not declare one.
    pub policy: StatePolicy,
}

impl StateLimits {
    /// The limits of a run: the budget given (`--max-state-bytes`), else half the
    /// container's memory limit when there is one.
    pub fn resolve(given: Option<MaxStateBytes>, policy: StatePolicy) -> Self {
        let max_bytes = match given {
            Some(MaxStateBytes::Bytes(b)) => Some(b),
            Some(MaxStateBytes::Unlimited) => None,
            None => default_max_state_bytes(container_memory_limit()),
        };
        Self { max_bytes, policy }
    }
}

/// A `--max-state-bytes` value: a size, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStateBytes {
    /// At most this many bytes.
    Bytes(usize),
    /// No budget.
    Unlimited,
}

impl MaxStateBytes {
    /// Reads `64MiB`, `1GiB`, `1000000` or `none`.
    pub fn parse(v: &str) -> Result<Self, String> {
        if v.trim().eq_ignore_ascii_case("none") {
            return Ok(MaxStateBytes::Unlimited);
        }
        let b = parse_size(v).map_err(|e| format!("{e}, or 'none'"))?;
        Ok(MaxStateBytes::Bytes(
            usize::try_from(b).unwrap_or(usize::MAX),
        ))
    }
}

/// A pipeline's budget and where it stands.
#[derive(Debug, Clone, Default)]
pub struct StateBudget {
    /// Its own budget (`max_state_bytes`), if any.
    pub max_bytes: Option<usize>,
    /// Its declared policy (`state_policy`), if any.
    pub declared: Option<StatePolicy>,
    /// The policy in force.
    pub policy: StatePolicy,
    /// Over its own budget under `drop_new_keys`: refusing new keys.
    pub refusing_own: bool,
    /// Asked by the process budget to refuse new keys.
    pub refusing_process: bool,
    /// Stopped by the `fail` policy.
    pub failed: bool,
    /// A budget applies (its own or the process's): its state is measured after every batch.
    /// Otherwise it is measured on the dataflow's periodic tick, for the metric only.
    pub measured: bool,
}

impl StateBudget {
    /// A budget as declared by the view's options.
    pub fn declared(max_bytes: Option<usize>, policy: Option<StatePolicy>) -> Self {
        Self {
            max_bytes,
            declared: policy,
            policy: policy.unwrap_or_default(),
            measured: max_bytes.is_some(),
            ..Self::default()
        }
    }

    /// Takes the process's limits: its default policy where none was declared, and whether
    /// any budget applies.
    pub fn apply(&mut self, limits: &StateLimits) {
        self.policy = self.declared.unwrap_or(limits.policy);
        self.measured = self.max_bytes.is_some() || limits.max_bytes.is_some();
    }

    /// Whether rows of new keys are refused now.
    pub fn refusing(&self) -> bool {
        self.refusing_own || self.refusing_process
    }
}

/// The fraction of a budget under which a refusing pipeline takes new keys again.
pub fn resume_below(limit: usize) -> usize {
    limit / 10 * 9
}

/// The memory limit of this process's container (cgroup v2 `memory.max`, or v1
/// `memory.limit_in_bytes`), if it has one.
pub fn container_memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if let Some(v) = read("/sys/fs/cgroup/memory.max") {
        return parse_cgroup_limit(&v);
    }
    read("/sys/fs/cgroup/memory/memory.limit_in_bytes").and_then(|v| parse_cgroup_limit(&v))
}

/// A cgroup memory limit file's value: `max` (or v1's huge "unlimited" number) is none.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    // cgroup v1 writes "no limit" as a page-rounded i64::MAX
    (v < (1 << 62)).then_some(v)
}

/// The default `--max-state-bytes`: half the container's memory limit.
pub fn default_max_state_bytes(container_limit: Option<u64>) -> Option<usize> {
    container_limit.map(|l| usize::try_from(l / 2).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_by_name() {
        for name in StatePolicy::NAMES {
            assert_eq!(StatePolicy::parse(name).unwrap().label(), *name);
        }
        assert_eq!(
            StatePolicy::parse(" Drop_New_Keys ").unwrap(),
            StatePolicy::DropNewKeys
        );
        let e = StatePolicy::parse("spill").unwrap_err();
        assert!(e.contains("emit_early, drop_new_keys, fail"), "{e}");
    }

    #[test]
    fn budgets_as_written() {
        assert_eq!(
            MaxStateBytes::parse("64MiB"),
            Ok(MaxStateBytes::Bytes(64 << 20))
        );
        assert_eq!(MaxStateBytes::parse(" None "), Ok(MaxStateBytes::Unlimited));
        assert!(MaxStateBytes::parse("lots").is_err());
        let l = StateLimits::resolve(Some(MaxStateBytes::Unlimited), StatePolicy::Fail);
        assert_eq!((l.max_bytes, l.policy), (None, StatePolicy::Fail));
    }

    #[test]
    fn cgroup_limits() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("268435456\n"), Some(256 << 20));
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(default_max_state_bytes(Some(256 << 20)), Some(128 << 20));
        assert_eq!(default_max_state_bytes(None), None);
    }

    #[test]
    fn declared_policy_wins_over_the_default() {
        let limits = StateLimits {
            max_bytes: None,
            policy: StatePolicy::DropNewKeys,
        };
        let mut b = StateBudget::declared(Some(10), Some(StatePolicy::Fail));
        b.apply(&limits);
        assert_eq!((b.policy, b.measured), (StatePolicy::Fail, true));
        let mut b = StateBudget::declared(None, None);
        b.apply(&limits);
        assert_eq!((b.policy, b.measured), (StatePolicy::DropNewKeys, false));
        b.apply(&StateLimits {
            max_bytes: Some(1),
            ..limits
        });
        assert!(b.measured);
        assert_eq!(resume_below(1000), 900);
    }
}
