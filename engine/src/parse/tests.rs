//! The parser on its own: statement splitting, `${ENV}` substitution, option positions and
//! the errors it reports before any planning.

use super::options::{OptionSpec, OptionType};
use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "HOST" => Some("broker.plant".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<PipelineFile, Vec<PipelineError>> {
    parse_file("p.sql", text, &env)
}

#[test]
fn statements_are_split_at_top_level_semicolons() {
    let f = parse(
        "CREATE SOURCE s (k VARCHAR) WITH (connector = 'a;b');\n\
         -- comment; with a semicolon\n\
         CREATE SINK out WITH (connector = 'stdout');\n\
         INSERT INTO out SELECT k FROM s WHERE k <> ';';\n;\n",
    )
    .unwrap();
    assert_eq!(f.statements.len(), 3);
    let Statement::Source(s) = &f.statements[0] else {
        panic!("first statement is the source")
    };
    assert_eq!(s.name, "s");
    assert_eq!(s.columns.len(), 1);
    assert!(matches!(&f.statements[2], Statement::Insert(q) if q.name == "out"));
}

#[test]
fn env_references_are_substituted_inside_strings_only() {
    let f = parse("CREATE SINK out WITH (connector = 'mqtt', url = 'mqtt://${HOST}:1883', note = '${EMPTY}x');")
        .unwrap();
    let Statement::Sink(s) = &f.statements[0] else {
        panic!("a sink")
    };
    let url = OptionSpec::new("url", OptionType::Url, "");
    let note = OptionSpec::new("note", OptionType::Text, "");
    assert_eq!(s.options.text(&url), Some("mqtt://broker.plant:1883"));
    assert_eq!(s.options.text(&note), Some("x"));
    let e = parse("CREATE SINK out WITH (connector = '${NOPE}');").unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].location,
        Location {
            line: 1,
            column: 35
        }
    );
    assert!(
        e[0].message
            .contains("environment variable 'NOPE' is not set")
    );
    let e = parse("CREATE SINK out WITH (connector = '${bad name}');").unwrap_err();
    assert!(
        e[0].message
            .contains("not a valid environment variable reference")
    );
}

#[test]
fn option_keys_and_values_have_positions() {
    let f = parse("CREATE SINK out WITH (\n  Connector = 'stdout',\n  format   = 'ndjson'\n);")
        .unwrap();
    let Statement::Sink(s) = &f.statements[0] else {
        panic!("a sink")
    };
    let format = OptionSpec::new("format", OptionType::Text, "");
    let e = s.options.entry(&format).unwrap();
    assert_eq!(e.key_location, Location { line: 3, column: 3 });
    assert_eq!(
        e.value_location,
        Location {
            line: 3,
            column: 14
        }
    );
    let connector = OptionSpec::new("connector", OptionType::Text, "");
    assert_eq!(
        s.options.text(&connector),
        Some("stdout"),
        "keys are lower-cased"
    );
}

#[test]
fn every_bad_statement_is_reported() {
    let e = parse("SELECT 1;\nDROP TABLE x;\nCREATE TABLE t (a INT);").unwrap_err();
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(e[0].location.line, 1);
    assert!(
        e[0].message.contains(
            "expected CREATE SOURCE, CREATE SINK, CREATE TABLE, CREATE VIEW or INSERT INTO"
        )
    );
    assert!(
        e[2].message
            .contains("expected WITH (connector = '...', ...)"),
        "{}",
        e[2].message
    );
    let e = parse("INSERT INTO out (a, b) SELECT 1, 2;").unwrap_err();
    assert!(
        e[0].message
            .contains("a column list after INSERT INTO sink is not supported")
    );
}

#[test]
fn parser_messages_carry_their_position() {
    let e = parser_error(
        "p.sql",
        ParserError::ParserError("Expected: ), found: EOF at Line: 3, Column: 7".into()),
        Location { line: 1, column: 1 },
    );
    assert_eq!(e.location, Location { line: 3, column: 7 });
    assert_eq!(e.message, "Expected: ), found: EOF");
    let e = parser_error(
        "p.sql",
        ParserError::RecursionLimitExceeded,
        Location { line: 2, column: 1 },
    );
    assert_eq!(
        (e.location.line, e.message.as_str()),
        (2, "statement nested too deeply")
    );
}
