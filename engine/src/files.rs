//! Pipeline files on disk: which files a list of paths means, reading and parsing them, and
//! a fingerprint of their contents to notice changes.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostics, Location, PipelineError};
use crate::parse;

/// The files `p` stands for: itself, or every `.sql` file in it (sorted) when it is a
/// directory. Hidden entries are skipped (Kubernetes mounts a ConfigMap with `..data` links).
fn files_of(p: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !p.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut sql: Vec<_> = std::fs::read_dir(p)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|x| x == "sql"))
        .filter(|f| {
            !f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    sql.sort();
    Ok(sql)
}

/// The text of a pipeline file's bytes, or where its first byte that is not UTF-8 is and
/// what it is.
pub fn pipeline_text(bytes: &[u8]) -> Result<String, (Location, String)> {
    utf8(bytes.to_vec())
}

/// The text of a file, or where its first byte that is not UTF-8 is.
fn utf8(bytes: Vec<u8>) -> Result<String, (Location, String)> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        // columns count characters, as the tokenizer's do
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        (
            Location {
                line: line as u64,
                column: column as u64,
            },
            format!(
                "the file is not UTF-8 text: invalid byte 0x{:02x} at byte offset {offset}",
                e.as_bytes()[offset]
            ),
        )
    })
}

/// Reads and parses pipeline files (a directory means every `.sql` file in it, sorted).
/// `${NAME}` is looked up with `env`.
pub fn load_files(
    paths: &[PathBuf],
    env: parse::EnvLookup<'_>,
) -> Result<Vec<parse::PipelineFile>, Diagnostics> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let list = files_of(p).unwrap_or_else(|e| {
            errors.push(PipelineError::new(
                &p.display().to_string(),
                Location::default(),
                format!("cannot read directory: {e}"),
            ));
            Vec::new()
        });
        for f in list {
            let name = f.display().to_string();
            match std::fs::read(&f)
                .map_err(|e| (Location::default(), format!("cannot read file: {e}")))
                .and_then(utf8)
            {
                Ok(text) => match parse::parse_file(&name, &text, env) {
                    Ok(pf) => files.push(pf),
                    Err(es) => errors.extend(es),
                },
                Err((at, message)) => errors.push(PipelineError::new(&name, at, message)),
            }
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(Diagnostics(errors))
    }
}

/// A hash of which pipeline files `paths` stand for and of their contents: it changes when
/// a file is edited, added, removed or replaced (as a ConfigMap update does). Unreadable
/// files and directories count as their error.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        match files_of(p) {
            Ok(list) => {
                for f in list {
                    f.hash(&mut h);
                    match std::fs::read(&f) {
                        Ok(bytes) => bytes.hash(&mut h),
                        Err(e) => e.kind().hash(&mut h),
                    }
                }
            }
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_contents_and_file_set() {
        let dir = std::env::temp_dir().join(format!("weir-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = vec![dir.clone()];
        std::fs::write(dir.join("a.sql"), "-- one").unwrap();
        let first = fingerprint(&paths);
        assert_eq!(first, fingerprint(&paths), "stable while nothing changes");
        std::fs::write(dir.join("notes.txt"), "not a pipeline").unwrap();
        std::fs::write(dir.join(".hidden.sql"), "-- hidden").unwrap();
        assert_eq!(
            first,
            fingerprint(&paths),
            "other and hidden files do not count"
        );
        std::fs::write(dir.join("a.sql"), "-- two").unwrap();
        let edited = fingerprint(&paths);
        assert_ne!(first, edited);
        std::fs::write(dir.join("b.sql"), "-- more").unwrap();
        assert_ne!(edited, fingerprint(&paths));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
