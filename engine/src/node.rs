//! The writer's identity in a fleet: the id of the node a Weir runs on, which the
//! object-store sink puts into every key (a `node=` partition and the file name) so that the
//! nodes of a fleet writing one bucket never overwrite each other's files.

use std::sync::OnceLock;

static NODE: OnceLock<String> = OnceLock::new();

/// `id` as a key part: letters, digits, `.`, `_` and `-` kept, anything else `_` (at most 63
/// characters; never empty).
pub fn sanitize(id: &str) -> String {
    let s: String = id
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    if s.is_empty() { "unknown".into() } else { s }
}

/// The host name, from the kernel.
fn host_name() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// The node id before [`set`]: `WEIR_NODE_ID`, else the Kubernetes node name
/// (`WEIR_NODE_NAME`, set by the manifests from `spec.nodeName`), else the host name.
fn from_environment() -> String {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let id = var("WEIR_NODE_ID")
        .or_else(|| var("WEIR_NODE_NAME"))
        .or_else(host_name)
        .unwrap_or_default();
    sanitize(&id)
}

/// Sets the node id (`--node-id`); false when it was already fixed.
pub fn set(id: &str) -> bool {
    NODE.set(sanitize(id)).is_ok()
}

/// The node id: what [`set`] gave, else `WEIR_NODE_ID`, `WEIR_NODE_NAME`, the host name.
pub fn id() -> &'static str {
    NODE.get_or_init(from_environment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_safe_key_parts() {
        assert_eq!(sanitize("edge-07.plant_a"), "edge-07.plant_a");
        assert_eq!(sanitize("a/b c=d"), "a_b_c_d");
        assert_eq!(sanitize("  "), "unknown");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 63);
    }
}
