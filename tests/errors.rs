//! Every class of pipeline error is reported as `file:line:column: message`, pointing at the
//! offending text, before anything connects.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

use weir_test_support::harness::{connectors, errors, try_compile, try_compile_with};

/// `p.sql:LINE:COL` of the first occurrence of `needle` in `sql` (computed here, not by the
/// engine).
fn at(sql: &str, needle: &str) -> String {
    let off = sql
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in sql"));
    let before = &sql[..off];
    let line = before.matches('\n').count() + 1;
    let col = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("p.sql:{line}:{col}")
}

const SRC: &str = "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE)\n  WITH (connector = 'test', event_time = 'ts');\nCREATE SINK out WITH (connector = 'stdout');\n";

async fn one_error(sql: &str) -> String {
    let e = errors(sql).await;
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e[0].clone()
}

fn assert_at(err: &str, sql: &str, needle: &str, message: &str) {
    assert!(
        err.starts_with(&format!("{}: ", at(sql, needle))),
        "error {err:?} should be at {needle:?} ({})",
        at(sql, needle)
    );
    assert!(
        err.contains(message),
        "error {err:?} should say {message:?}"
    );
}

#[tokio::test]
async fn unknown_source_connector() {
    let sql = "CREATE SOURCE s (k VARCHAR)\n  WITH (connector = 'kafka');\nCREATE SINK out WITH (connector = 'stdout');\nINSERT INTO out SELECT * FROM s;";
    assert_at(
        &one_error(sql).await,
        sql,
        "'kafka'",
        "unknown source connector 'kafka' (available: test)",
    );
}

#[tokio::test]
async fn unknown_sink_connector() {
    let sql =
        format!("{SRC}CREATE SINK x WITH (connector = 'ftp');\nINSERT INTO out SELECT * FROM s;");
    assert_at(
        &one_error(&sql).await,
        &sql,
        "'ftp'",
        "unknown sink connector 'ftp' (available: file, object_store, stdout)",
    );
}

/// A connector this build was made without (a `--no-default-features` build registers the
/// ones it leaves out as absent) is named with the feature that brings it, as a source and as
/// a sink.
#[tokio::test]
async fn connector_left_out_of_the_build() {
    let mut c = connectors();
    c.add_absent("opcua", "opcua");
    c.add_absent("mqtt", "mqtt");
    let sql = "CREATE SOURCE s (k VARCHAR)\n  WITH (connector = 'opcua');\nCREATE SINK out WITH (connector = 'mqtt', topic = 'x');\nINSERT INTO out SELECT * FROM s;";
    let e: Vec<String> = match try_compile_with(sql, &[], true, &c).await {
        Ok(_) => panic!("compiled with connectors left out"),
        Err(d) => d.0.iter().map(|e| e.to_string()).collect(),
    };
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_at(
        &e[0],
        sql,
        "'opcua'",
        "connector 'opcua' is not in this build (built without feature \"opcua\")",
    );
    assert_at(
        &e[1],
        sql,
        "'mqtt'",
        "connector 'mqtt' is not in this build (built without feature \"mqtt\")",
    );
}

#[tokio::test]
async fn unknown_option() {
    let sql = format!(
        "{SRC}CREATE SINK f WITH (connector = 'stdout',\n    colour = 'red');\nINSERT INTO out SELECT * FROM s;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "colour",
        "unknown option 'colour' for connector 'stdout'",
    );
}

#[tokio::test]
async fn view_options_are_checked_where_written() {
    let view = |opts: &str| {
        format!(
            "{SRC}CREATE VIEW v WITH ({opts}) AS\n  SELECT k, window_start, count(*) AS n FROM TUMBLE(s, ts, '1s') GROUP BY k, window_start, window_end;\nINSERT INTO out SELECT * FROM v;"
        )
    };
    let sql = view("max_state_bytes = '64MiB', state_policy = 'spill'");
    assert_at(&one_error(&sql).await, &sql, "'spill'", "state_policy");
    let sql = view("max_state_bytes = 'lots'");
    assert_at(&one_error(&sql).await, &sql, "'lots'", "expected a size");
    let sql = view("max_state = '1MiB'");
    assert_at(
        &one_error(&sql).await,
        &sql,
        "max_state",
        "unknown option 'max_state' for a view (known options: max_state_bytes, state_policy, fill_keys)",
    );
    let sql = view("max_state_bytes = '1MiB', state_policy = 'drop_new_keys'");
    assert!(try_compile(&sql, &[], true).await.is_ok());
}

#[tokio::test]
async fn reserved_words_are_refused_where_they_are_declared() {
    let sql = format!(
        "{SRC}CREATE SINK local WITH (connector = 'stdout');\nINSERT INTO local SELECT * FROM s;"
    );
    let e = errors(&sql).await;
    assert!(
        e.iter().any(
            |e| e.contains("p.sql:4:13: 'local' is a reserved word in SQL")
                && e.contains("(\"local\")")
        ),
        "{e:?}"
    );
    let quoted = format!(
        "{SRC}CREATE SINK \"local\" WITH (connector = 'stdout');\nINSERT INTO \"local\" SELECT * FROM s;"
    );
    assert!(try_compile(&quoted, &[], true).await.is_ok());
}

#[tokio::test]
async fn missing_required_option() {
    let sql = format!(
        "{SRC}CREATE SINK files WITH (connector = 'file');\nINSERT INTO out SELECT * FROM s;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "files",
        "missing required option 'path'",
    );
    let sql = format!(
        "{SRC}CREATE SINK nowhere WITH (format = 'table');\nINSERT INTO out SELECT * FROM s;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "nowhere",
        "missing required option 'connector'",
    );
}

#[tokio::test]
async fn option_value_of_the_wrong_type() {
    let sql = "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP)\n  WITH (connector = 'test', event_time = 'ts', watermark = 'soon');\nCREATE SINK out WITH (connector = 'stdout');\nINSERT INTO out SELECT * FROM s;";
    assert_at(
        &one_error(sql).await,
        sql,
        "'soon'",
        "option 'watermark' = 'soon': expected a duration",
    );
}

#[tokio::test]
async fn event_time_column_of_the_wrong_type() {
    let sql = "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP)\n  WITH (connector = 'test', event_time = 'k');\nCREATE SINK out WITH (connector = 'stdout');\nINSERT INTO out SELECT * FROM s;";
    assert_at(
        &one_error(sql).await,
        sql,
        "'k'",
        "type mismatch: the event-time column must be TIMESTAMP",
    );
}

#[tokio::test]
async fn expression_type_mismatch() {
    let sql = format!("{SRC}INSERT INTO out SELECT k,\n       ts - 'abc' AS bad FROM s;");
    assert_at(&one_error(&sql).await, &sql, "ts - 'abc'", "");
}

#[tokio::test]
async fn unknown_column() {
    let sql = format!("{SRC}INSERT INTO out SELECT k, nope FROM s;");
    assert_at(&one_error(&sql).await, &sql, "nope", "nope");
}

#[tokio::test]
async fn unknown_function() {
    let sql = format!("{SRC}INSERT INTO out\nSELECT k, frobnicate(v) FROM s;");
    assert_at(
        &one_error(&sql).await,
        &sql,
        "frobnicate",
        "Invalid function 'frobnicate'",
    );
}

#[tokio::test]
async fn unknown_stream_and_unknown_sink() {
    let sql = format!("{SRC}INSERT INTO out SELECT * FROM\n  missing;");
    assert_at(&one_error(&sql).await, &sql, "missing", "missing");
    let sql = format!("{SRC}INSERT INTO nowhere SELECT * FROM s;");
    assert_at(
        &one_error(&sql).await,
        &sql,
        "nowhere",
        "unknown sink 'nowhere'",
    );
}

#[tokio::test]
async fn unbounded_group_by_without_window_is_rejected() {
    let sql = format!("{SRC}INSERT INTO out SELECT k, count(*) FROM s\nGROUP BY k;");
    let e = one_error(&sql).await;
    assert_at(
        &e,
        &sql,
        "k;",
        "GROUP BY without a window over an unbounded source",
    );
    assert!(
        e.contains("TUMBLE(source, ts, INTERVAL '1' MINUTE)"),
        "says what to write instead: {e}"
    );
}

#[tokio::test]
async fn window_group_by_must_name_the_window() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, count(*) FROM TUMBLE(s, ts, INTERVAL '1' MINUTE)\nGROUP BY k;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "k;",
        "must include window_start (and, for SESSION, window_end)",
    );
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, count(*) FROM SESSION(s, ts, INTERVAL '1' MINUTE)\nGROUP BY k, window_start;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "k, window_start;",
        "must include window_start (and, for SESSION, window_end)",
    );
    // a tumbling window's end follows from its start
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, count(*) FROM TUMBLE(s, ts, INTERVAL '1' MINUTE) GROUP BY k, window_start;"
    );
    assert!(try_compile(&sql, &[], true).await.is_ok());
}

#[tokio::test]
async fn window_on_a_column_without_watermark() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT count(*) FROM TUMBLE(s, v, INTERVAL '1' MINUTE) GROUP BY window_start, window_end;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "TUMBLE",
        "column 'v' of 's' carries no watermark; use ts",
    );
}

#[tokio::test]
async fn syntax_error() {
    let sql = format!("{SRC}INSERT INTO out SELECT k FROM s WHERE\n  ;");
    let e = one_error(&sql).await;
    assert!(e.starts_with("p.sql:5:3: Expected: an expression"), "{e}");
    let sql = format!("{SRC}DROP TABLE s;");
    assert_at(
        &one_error(&sql).await,
        &sql,
        "DROP",
        "expected CREATE SOURCE, CREATE SINK, CREATE TABLE, CREATE VIEW or INSERT INTO",
    );
}

#[tokio::test]
async fn missing_environment_variable() {
    let sql = format!(
        "{SRC}CREATE SINK f WITH (connector = 'file', path = '/tmp/${{WEIR_TEST_UNSET}}');\nINSERT INTO out SELECT * FROM s;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "'/tmp/",
        "environment variable 'WEIR_TEST_UNSET' is not set",
    );
}

#[tokio::test]
async fn every_error_of_a_file_is_reported() {
    let sql = format!(
        "{SRC}CREATE SINK a WITH (connector = 'nope');\nINSERT INTO out SELECT nope FROM s;\nINSERT INTO out SELECT k FROM s GROUP BY k;"
    );
    let e = errors(&sql).await;
    assert_eq!(e.len(), 3, "{e:#?}");
}

#[tokio::test]
async fn comments_and_environment_substitution() {
    let sql = "-- a comment\n/* a block\n   comment */\nCREATE SOURCE s (k VARCHAR, ts TIMESTAMP) WITH (connector = '${CONN}', event_time = 'ts'); -- trailing\nCREATE SINK out WITH (connector = 'stdout');\nINSERT INTO out /* inline */ SELECT k FROM s WHERE k = '${KEY}';";
    let p = try_compile(sql, &[("CONN", "test"), ("KEY", "a")], true).await;
    assert!(p.is_ok(), "{:?}", p.err().map(|d| d.to_string()));
}

#[tokio::test]
async fn unsupported_window_function() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, row_number() OVER (PARTITION BY k ORDER BY ts) FROM s;"
    );
    assert_at(
        &one_error(&sql).await,
        &sql,
        "out SELECT k, row_number",
        "only ewma(value, alpha), zscore(value, n), locf(value) and interpolate(value, time, max_gap)",
    );
}

/// One bad option value among valid ones, for every connector: exactly one error, at that
/// value, and no valid option called unknown (the options are declared, not discovered).
#[tokio::test]
async fn one_bad_option_is_one_error_for_every_connector() {
    use weir_test_support::harness::errors_with_all_connectors;
    let dir = tempfile::tempdir().unwrap();
    let replay = dir.path().join("in.ndjson");
    std::fs::write(&replay, "{\"ts\": \"2026-01-01T00:00:00Z\", \"v\": 1}\n").unwrap();
    let replay = replay.display().to_string();
    let out = dir.path().join("out").display().to_string();
    let source = |with: &str| {
        format!(
            "CREATE SOURCE s (machine VARCHAR, ts TIMESTAMP, value DOUBLE)\n  WITH ({with}, event_time = 'ts');\nCREATE SINK out WITH (connector = 'stdout');\nINSERT INTO out SELECT * FROM s;"
        )
    };
    let sink = |with: &str| {
        format!(
            "CREATE SOURCE s (machine VARCHAR, ts TIMESTAMP, value DOUBLE)\n  WITH (connector = 'generator', event_time = 'ts');\nCREATE SINK k WITH ({with});\nINSERT INTO k SELECT * FROM s;"
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            source(
                "connector = 'generator', machines = 'many', sensors = 'vib', rate = '10', seed = '7'",
            ),
            "'many'",
            "expected a whole number",
        ),
        (
            format!(
                "CREATE SOURCE s (ts TIMESTAMP, v BIGINT)\n  WITH (connector = 'file', path = '{replay}', pace = 'fast', speed = '2', batch_rows = '10', event_time = 'ts');\nCREATE SINK out WITH (connector = 'stdout');\nINSERT INTO out SELECT * FROM s;"
            ),
            "'fast'",
            "expected one of max, original",
        ),
        (
            source(
                "connector = 'mqtt', url = 'mqtt://127.0.0.1:1', qos = '7', topic = 'plant/{machine}', keep_alive = '10s', batch_rows = '10'",
            ),
            "'7'",
            "expected 0, 1 or 2",
        ),
        (
            source(
                "connector = 'modbus', url = 'tcp://127.0.0.1:1', interval = 'soon', registers = 'value = holding 0 float32', unit_column = 'machine', timeout = '1s'",
            ),
            "'soon'",
            "expected a duration",
        ),
        (
            source(
                "connector = 'opcua', url = 'opc.tcp://127.0.0.1:1/', security_policy = 'Basic128', nodes = 'value = ns=2;s=T', shape = 'long', timeout = '1s'",
            ),
            "'Basic128'",
            "expected None, Basic256Sha256",
        ),
        (
            sink("connector = 'stdout', format = 'xml'"),
            "'xml'",
            "expected one of table, ndjson",
        ),
        (
            sink(&format!(
                "connector = 'file', roll_rows = 'lots', path = '{out}', format = 'ndjson', roll_interval = '1m'"
            )),
            "'lots'",
            "expected a whole number",
        ),
        (
            sink(&format!(
                "connector = 'object_store', spill_policy = 'never', url = 'file://{out}', roll_rows = '10', spill_max_bytes = '1MiB'"
            )),
            "'never'",
            "expected one of drop_oldest, block",
        ),
        (
            sink(
                "connector = 'mqtt', url = 'mqtt://127.0.0.1:1', retain = 'maybe', topic = 'alerts/{machine}', qos = '1', keep_alive = '5s'",
            ),
            "'maybe'",
            "expected true or false",
        ),
    ];
    for (sql, needle, message) in cases {
        let e = errors_with_all_connectors(&sql).await;
        assert_eq!(e.len(), 1, "one error expected for\n{sql}\ngot {e:#?}");
        assert_at(&e[0], &sql, needle, message);
        assert!(!e[0].contains("unknown option"), "{}", e[0]);
    }
}

/// Constant arguments that can never work are errors at the call, before anything runs.
#[tokio::test]
async fn impossible_constant_arguments_are_errors_at_the_call() {
    let window = "FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "INSERT INTO out SELECT k, ewma(v, 2) OVER (PARTITION BY k ORDER BY ts) AS e FROM s;".to_string(),
            "ewma(",
            "alpha must be in (0, 1]",
        ),
        (
            "INSERT INTO out SELECT k, ewma(v, -0.5) OVER (PARTITION BY k ORDER BY ts) AS e FROM s;".to_string(),
            "ewma(",
            "alpha must be in (0, 1]",
        ),
        (
            "INSERT INTO out SELECT k, zscore(v, 0) OVER (PARTITION BY k ORDER BY ts) AS z FROM s;".to_string(),
            "zscore(",
            "n must be between 2",
        ),
        (
            format!(
                "INSERT INTO out SELECT k, window_start, approx_percentile_cont(v, 1.5) AS p {window};"
            ),
            "approx_percentile_cont(",
            "approx_percentile_cont",
        ),
        (
            format!(
                "INSERT INTO out SELECT k, window_start, band_energy(v, 0, 1, 2 ORDER BY ts) AS b {window};"
            ),
            "band_energy(",
            "sample_rate_hz must be a positive number",
        ),
        (
            format!(
                "INSERT INTO out SELECT k, window_start, band_energy(v, 100, 30, 10 ORDER BY ts) AS b {window};"
            ),
            "band_energy(",
            "the band is empty",
        ),
        (
            "INSERT INTO out SELECT k, iso10816_zone(v, 'group9_rigid') AS z FROM s;".to_string(),
            "iso10816_zone(",
            "unknown machine class 'group9_rigid'",
        ),
    ];
    for (query, needle, message) in cases {
        let sql = format!("{SRC}{query}");
        assert_at(&one_error(&sql).await, &sql, needle, message);
    }
}

#[tokio::test]
async fn a_hop_with_too_many_panes_per_window_is_refused() {
    let sql = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n FROM HOP(s, ts, INTERVAL '1' MILLISECOND, INTERVAL '1' HOUR) GROUP BY k, window_start, window_end;"
    );
    let e = one_error(&sql).await;
    assert_at(&e, &sql, "HOP(", "keeps 3600000 panes per window");
    assert!(
        e.contains("at most 1000") && e.contains("slide of at least 3s"),
        "{e}"
    );
    // a reasonable HOP is fine
    let ok = format!(
        "{SRC}INSERT INTO out SELECT k, window_start, count(*) AS n FROM HOP(s, ts, INTERVAL '10' SECOND, INTERVAL '1' HOUR) GROUP BY k, window_start, window_end;"
    );
    assert!(errors(&ok).await.is_empty());
}
