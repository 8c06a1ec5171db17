//! Weir's engine: pipeline files, the compiler onto DataFusion, event-time windows,
//! the dataflow that runs them, and the development sinks.

pub mod backoff;
pub mod compile;
pub mod connector;
pub mod diagnostic;
pub mod exec;
pub mod parse;
pub mod runtime;
pub mod sinks;
pub mod window;

pub use compile::{Project, compile};
pub use connector::Connectors;
pub use diagnostic::{Diagnostics, Location, PipelineError};

/// Reads and parses pipeline files (a directory means every `.sql` file in it, sorted).
/// `${NAME}` is looked up with `env`.
pub fn load_files(
    paths: &[std::path::PathBuf],
    env: parse::EnvLookup<'_>,
) -> Result<Vec<parse::PipelineFile>, Diagnostics> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let mut list = Vec::new();
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut sql: Vec<_> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "sql"))
                        .collect();
                    sql.sort();
                    list.extend(sql);
                }
                Err(e) => errors.push(PipelineError::new(
                    &p.display().to_string(),
                    Location::default(),
                    format!("cannot read directory: {e}"),
                )),
            }
        } else {
            list.push(p.clone());
        }
        for f in list {
            let name = f.display().to_string();
            match std::fs::read_to_string(&f) {
                Ok(text) => match parse::parse_file(&name, &text, env) {
                    Ok(pf) => files.push(pf),
                    Err(es) => errors.extend(es),
                },
                Err(e) => errors.push(PipelineError::new(
                    &name,
                    Location::default(),
                    format!("cannot read file: {e}"),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(Diagnostics(errors))
    }
}
