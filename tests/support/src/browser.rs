//! Debian's Chromium, headless, loading a page Weir serves on loopback: the DOM after its
//! scripts ran, and screenshots. Started with the flags that keep it off the network (no
//! background requests, no component updates) and a fresh profile each time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The Chromium binary (`WEIR_CHROMIUM` overrides; `scripts/test` installs Debian's).
pub fn chromium() -> PathBuf {
    std::env::var_os("WEIR_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Headless Chromium off the network, with the profile directory `profile`; the caller
/// adds its flags and the URL.
pub fn command(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Runs headless Chromium on `url` with `extra` flags; its scripts get `budget` of virtual
/// time (timers run, fetches complete) before it dumps or shoots.
fn run(url: &str, budget: Duration, extra: &[String]) -> Output {
    let profile = std::env::temp_dir().join(format!(
        "weir-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let out = command(&profile)
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): scripts/test installs Debian's chromium",
                chromium().display()
            )
        });
    let _ = std::fs::remove_dir_all(&profile);
    out
}

/// The DOM of `url` after its scripts ran for `budget` of virtual time.
pub fn dump_dom(url: &str, budget: Duration) -> String {
    let out = run(url, budget, &["--dump-dom".to_string()]);
    assert!(
        out.status.success(),
        "chromium --dump-dom {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A PNG screenshot of `url` (`width` × `height` pixels) written to `path`.
pub fn screenshot(url: &str, budget: Duration, width: u32, height: u32, path: &Path) {
    let out = run(
        url,
        budget,
        &[
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", path.display()),
        ],
    );
    assert!(
        out.status.success() && path.exists(),
        "chromium --screenshot {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Width and height of a PNG file, from its header.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

/// The attribute `name` of every element whose opening tag contains `marker`, in order.
pub fn attributes<'a>(dom: &'a str, marker: &str, name: &str) -> Vec<&'a str> {
    let needle = format!("{name}=\"");
    dom.match_indices(marker)
        .filter_map(|(i, _)| {
            let start = dom[..i].rfind('<')?;
            let end = i + dom[i..].find('>')?;
            let tag = &dom[start..end];
            let at = tag.find(&needle)? + needle.len();
            let len = tag[at..].find('"')?;
            Some(&tag[at..at + len])
        })
        .collect()
}
