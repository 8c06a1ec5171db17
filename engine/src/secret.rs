//! Secrets the HTTP endpoints and Flight SQL check callers against.

/// Compares a presented token with the configured one without stopping at the first
/// difference.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
