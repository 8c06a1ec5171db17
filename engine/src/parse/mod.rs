//! Reads pipeline files: tokenizes, substitutes `${ENV}` inside quoted strings, splits the
//! file into statements and parses each into a [`Statement`].

mod ddl;
pub mod limits;
pub mod options;

use datafusion::sql::sqlparser::ast::{self, Spanned};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer, Word};

use crate::diagnostic::{Location, PipelineError};
pub use options::{OptionEntry, Options};

/// `CREATE SOURCE name (columns) WITH (options)`.
#[derive(Debug)]
pub struct SourceStatement {
    /// Source name.
    pub name: String,
    /// Where the name is.
    pub location: Location,
    /// Declared columns.
    pub columns: Vec<ast::ColumnDef>,
    /// `WITH` options.
    pub options: Options,
}

/// `CREATE TABLE name (columns, PRIMARY KEY (...)) WITH (options)`: a reference table.
#[derive(Debug)]
pub struct TableStatement {
    /// Table name.
    pub name: String,
    /// Where the name is.
    pub location: Location,
    /// Declared columns.
    pub columns: Vec<ast::ColumnDef>,
    /// Primary key columns as written, with where each is.
    pub primary_key: Vec<(String, Location)>,
    /// `WITH` options.
    pub options: Options,
}

/// `CREATE SINK name WITH (options)`.
#[derive(Debug)]
pub struct SinkStatement {
    /// Sink name.
    pub name: String,
    /// Where the name is.
    pub location: Location,
    /// `WITH` options.
    pub options: Options,
}

/// A query that feeds a view or a sink.
#[derive(Debug)]
pub struct QueryStatement {
    /// The view or sink name.
    pub name: String,
    /// Where the name is.
    pub location: Location,
    /// The `SELECT`.
    pub query: Box<ast::Query>,
    /// The query text as written (for messages and `--explain`).
    pub text: String,
    /// `WITH (...)` options of a view (none for an insert).
    pub options: Option<Options>,
}

/// One statement of a pipeline file.
#[derive(Debug)]
pub enum Statement {
    /// `CREATE SOURCE`.
    Source(SourceStatement),
    /// `CREATE SINK`.
    Sink(SinkStatement),
    /// `CREATE TABLE`: a reference table.
    Table(TableStatement),
    /// `CREATE VIEW name AS SELECT ...`.
    View(QueryStatement),
    /// `INSERT INTO sink SELECT ...`.
    Insert(QueryStatement),
}

/// A parsed pipeline file.
#[derive(Debug)]
pub struct PipelineFile {
    /// The path as given.
    pub path: String,
    /// Its statements, in order.
    pub statements: Vec<Statement>,
}

/// Longest name (of a column, source, view, function, ...) accepted.
pub const MAX_IDENTIFIER_CHARS: usize = 1024;

/// Reads `${NAME}` values; a function so tests can supply their own environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses the text of one pipeline file. All errors found are returned, not only the first.
pub fn parse_file(
    path: &str,
    text: &str,
    env: EnvLookup<'_>,
) -> Result<PipelineFile, Vec<PipelineError>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            vec![PipelineError::new(
                path,
                Location {
                    line: e.location.line,
                    column: e.location.column,
                },
                e.message,
            )]
        })?;
    let mut errors = Vec::new();
    if let Some(t) = tokens.iter().find(
        |t| matches!(&t.token, Token::Word(w) if w.value.chars().count() > MAX_IDENTIFIER_CHARS),
    ) {
        let chars = match &t.token {
            Token::Word(w) => w.value.chars().count(),
            _ => 0,
        };
        return Err(vec![PipelineError::new(
            path,
            Location::from_sql(t.span.start),
            format!(
                "identifier of {chars} characters: names are at most {MAX_IDENTIFIER_CHARS} characters long"
            ),
        )]);
    }
    let tokens = substitute_env(path, tokens, env, &mut errors);
    let mut statements = Vec::new();
    for stmt_tokens in split_statements(tokens) {
        match parse_statement(path, text, stmt_tokens) {
            Ok(s) => statements.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(PipelineFile {
            path: path.to_string(),
            statements,
        })
    } else {
        Err(errors)
    }
}

/// Replaces `${NAME}` inside quoted strings by the value of environment variable NAME.
fn substitute_env(
    path: &str,
    tokens: Vec<TokenWithSpan>,
    env: EnvLookup<'_>,
    errors: &mut Vec<PipelineError>,
) -> Vec<TokenWithSpan> {
    tokens
        .into_iter()
        .map(|mut t| {
            if let Token::SingleQuotedString(s) = &mut t.token
                && s.contains("${")
            {
                match expand(s, env) {
                    Ok(v) => *s = v,
                    Err(m) => errors.push(PipelineError::new(
                        path,
                        Location::from_sql(t.span.start),
                        m,
                    )),
                }
            }
            t
        })
        .collect()
}

/// Expands every `${NAME}` in `s`.
fn expand(s: &str, env: EnvLookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated '${' in string (write ${NAME})".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "'${{{name}}}' is not a valid environment variable reference"
            ));
        }
        let value = env(name).ok_or_else(|| {
            format!("environment variable '{name}' is not set (used as ${{{name}}})")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits tokens at top-level semicolons, dropping statements that hold only whitespace
/// and comments.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for t in tokens {
        if t.token == Token::SemiColon {
            // an explicit end at the semicolon, so "found: EOF" errors point there
            current.push(TokenWithSpan::new(Token::EOF, t.span));
            out.push(std::mem::take(&mut current));
        } else {
            current.push(t);
        }
    }
    // the last statement ends at the end of the file: errors about a missing end point there
    if let Some(last) = current.last() {
        let end = last.span.end;
        current.push(TokenWithSpan::new(Token::EOF, Span::new(end, end)));
    }
    out.push(current);
    out.retain(|s| {
        s.iter()
            .any(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
    });
    out
}

/// The significant words at the start of a statement, upper-cased.
fn leading_words(tokens: &[TokenWithSpan], n: usize) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .take(n)
        .map(|t| match &t.token {
            Token::Word(Word { value, .. }) => value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect()
}

/// Location of the first significant token.
fn first_location(tokens: &[TokenWithSpan]) -> Location {
    tokens
        .iter()
        .find(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(|t| Location::from_sql(t.span.start))
        .unwrap_or_default()
}

/// Converts a sqlparser error (whose message ends in "at Line: L, Column: C") into a
/// located error; `fallback` is used when the message carries no position.
pub(crate) fn parser_error(path: &str, e: ParserError, fallback: Location) -> PipelineError {
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nested too deeply".to_string(),
    };
    if let Some(pos) = msg.rfind(" at Line: ") {
        let tail = &msg[pos + " at Line: ".len()..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return PipelineError::new(path, Location { line, column }, &msg[..pos]);
        }
    }
    PipelineError::new(path, fallback, msg)
}

fn parse_statement(
    path: &str,
    text: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<Statement, PipelineError> {
    let start = first_location(&tokens);
    let words = leading_words(&tokens, 2);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["CREATE", "SOURCE"] => ddl::parse_source(path, tokens).map(Statement::Source),
        ["CREATE", "SINK"] => ddl::parse_sink(path, tokens).map(Statement::Sink),
        ["CREATE", "TABLE"] => ddl::parse_table(path, tokens).map(Statement::Table),
        ["CREATE", _] | ["INSERT", _] => parse_query_statement(path, text, tokens, start),
        _ => Err(PipelineError::new(
            path,
            start,
            "expected CREATE SOURCE, CREATE SINK, CREATE TABLE, CREATE VIEW or INSERT INTO",
        )),
    }
}

fn parse_query_statement(
    path: &str,
    text: &str,
    tokens: Vec<TokenWithSpan>,
    start: Location,
) -> Result<Statement, PipelineError> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let stmt = parser
        .parse_statement()
        .map_err(|e| parser_error(path, e, start))?;
    limits::check_statement(&stmt).map_err(|e| {
        let at = if e.location.is_unknown() {
            start
        } else {
            e.location
        };
        PipelineError::new(path, at, e.message)
    })?;
    let unsupported = |what: &str| {
        PipelineError::new(
            path,
            start,
            format!(
                "{what} is not supported here: expected CREATE SOURCE, CREATE SINK, CREATE TABLE, CREATE VIEW name AS SELECT ... or INSERT INTO sink SELECT ..."
            ),
        )
    };
    match stmt {
        ast::Statement::CreateView(v) => {
            if v.materialized {
                return Err(unsupported("CREATE MATERIALIZED VIEW"));
            }
            let (name, location) = object_name(&v.name);
            let options = view_options(path, location, &v.options)?;
            let query = v.query;
            Ok(Statement::View(QueryStatement {
                name,
                location,
                text: span_text(text, query.span()),
                query,
                options: Some(options),
            }))
        }
        ast::Statement::Insert(ins) => {
            let ast::TableObject::TableName(table) = &ins.table else {
                return Err(unsupported("INSERT INTO a table function"));
            };
            let (name, location) = object_name(table);
            if !ins.columns.is_empty() {
                return Err(PipelineError::new(
                    path,
                    location,
                    "a column list after INSERT INTO sink is not supported: the sink takes the columns of the SELECT",
                ));
            }
            let query = ins
                .source
                .ok_or_else(|| PipelineError::new(path, location, "INSERT INTO needs a SELECT"))?;
            Ok(Statement::Insert(QueryStatement {
                name,
                location,
                text: span_text(text, query.span()),
                query,
                options: None,
            }))
        }
        other => {
            let kind = other.to_string();
            let kind: String = kind
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            Err(unsupported(&kind))
        }
    }
}

/// The `WITH (key = 'value', ...)` of `CREATE VIEW name WITH (...) AS SELECT ...`.
fn view_options(
    path: &str,
    at: Location,
    options: &ast::CreateTableOptions,
) -> Result<Options, PipelineError> {
    let list: &[ast::SqlOption] = match options {
        ast::CreateTableOptions::None => &[],
        ast::CreateTableOptions::With(l) => l,
        _ => {
            return Err(PipelineError::new(
                path,
                at,
                "a view takes its options as WITH (key = 'value', ...) before AS",
            ));
        }
    };
    let mut entries: Vec<OptionEntry> = Vec::new();
    for o in list {
        let ast::SqlOption::KeyValue { key, value } = o else {
            return Err(PipelineError::new(
                path,
                at,
                format!("expected key = 'value' in the view's WITH (...), found {o}"),
            ));
        };
        let value_location = Location::from_sql(value.span().start);
        let value_text = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                ast::Value::Number(n, _) => n.clone(),
                other => other.to_string(),
            },
            ast::Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        };
        let name = key.value.to_ascii_lowercase();
        if entries.iter().any(|e| e.key == name) {
            return Err(PipelineError::new(
                path,
                Location::from_sql(key.span.start),
                format!("option '{name}' given twice"),
            ));
        }
        entries.push(OptionEntry {
            key: name,
            value: value_text,
            key_location: Location::from_sql(key.span.start),
            value_location,
        });
    }
    Ok(Options::new(path, at, entries))
}

/// The last part of a (possibly qualified) name, and its location.
fn object_name(name: &ast::ObjectName) -> (String, Location) {
    let ident = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .cloned()
        .unwrap_or_else(|| ast::Ident::new(name.to_string()));
    (ident_name(&ident), Location::from_sql(ident.span.start))
}

/// An identifier as DataFusion normalizes it: unquoted names are lower-cased.
pub(crate) fn ident_name(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// The text covered by `span` (whole lines when the span is partial or unknown).
fn span_text(text: &str, span: datafusion::sql::sqlparser::tokenizer::Span) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let (s, e) = (span.start, span.end);
    if s.line == 0 || e.line == 0 || e.line as usize > lines.len() {
        return String::new();
    }
    let mut out = String::new();
    for l in s.line..=e.line {
        let line = lines[(l - 1) as usize];
        let from = if l == s.line {
            (s.column - 1) as usize
        } else {
            0
        };
        let to = if l == e.line {
            ((e.column - 1) as usize).min(line.len())
        } else {
            line.len()
        };
        if from <= to && line.is_char_boundary(from) && line.is_char_boundary(to) {
            out.push_str(&line[from..to]);
        }
        if l != e.line {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests;
