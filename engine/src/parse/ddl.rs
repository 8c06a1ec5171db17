//! `CREATE SOURCE` and `CREATE SINK`: the two statements that are ours rather than SQL's.

use datafusion::sql::sqlparser::ast::Ident;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::options::{OptionEntry, Options};
use super::{
    SinkStatement, SourceStatement, TableStatement, first_location, ident_name, parser_error,
};
use crate::diagnostic::{Location, PipelineError};

/// The dialect of pipeline statements.
static DIALECT: GenericDialect = GenericDialect {};

/// A parser over one statement's tokens, and where the statement starts.
fn statement_parser(tokens: Vec<TokenWithSpan>) -> (Location, Parser<'static>) {
    let start = first_location(&tokens);
    (
        start,
        Parser::new(&DIALECT).with_tokens_with_locations(tokens),
    )
}

/// Parses `CREATE SOURCE name (col type, ...) WITH (key = 'value', ...)`.
pub(super) fn parse_source(
    path: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<SourceStatement, PipelineError> {
    let (start, mut p) = statement_parser(tokens);
    let (name, location, columns, constraints) = parse_head(
        path,
        &mut p,
        start,
        "CREATE SOURCE name (col TYPE, ...) WITH (...)",
    )?;
    if !constraints.is_empty() {
        return Err(PipelineError::new(
            path,
            location,
            "constraints are not supported on a source",
        ));
    }
    let options = parse_with(path, &mut p, location)?;
    Ok(SourceStatement {
        name: ident_name(&name),
        location,
        columns,
        options,
    })
}

/// Parses `CREATE TABLE name (col type [PRIMARY KEY], ..., [PRIMARY KEY (col, ...)]) WITH
/// (key = 'value', ...)`.
pub(super) fn parse_table(
    path: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<TableStatement, PipelineError> {
    use datafusion::sql::sqlparser::ast::{ColumnOption, Expr, TableConstraint};
    let (start, mut p) = statement_parser(tokens);
    let (name, location, columns, constraints) = parse_head(
        path,
        &mut p,
        start,
        "CREATE TABLE name (col TYPE, ..., PRIMARY KEY (col)) WITH (connector = 'file', path = '...')",
    )?;
    let at = |i: &Ident| Location::from_sql(i.span.start);
    let mut primary_key: Vec<(String, Location)> = Vec::new();
    for c in &columns {
        for o in &c.options {
            if matches!(o.option, ColumnOption::PrimaryKey(_)) {
                primary_key.push((ident_name(&c.name), at(&c.name)));
            }
        }
    }
    for c in &constraints {
        let TableConstraint::PrimaryKey(pk) = c else {
            return Err(PipelineError::new(
                path,
                location,
                format!("only PRIMARY KEY is supported on a reference table, found {c}"),
            ));
        };
        if !primary_key.is_empty() {
            return Err(PipelineError::new(
                path,
                location,
                "the primary key is declared twice",
            ));
        }
        for col in &pk.columns {
            match &col.column.expr {
                Expr::Identifier(i) => primary_key.push((ident_name(i), at(i))),
                other => {
                    return Err(PipelineError::new(
                        path,
                        location,
                        format!("a primary key is a list of columns, found {other}"),
                    ));
                }
            }
        }
    }
    let options = parse_with(path, &mut p, location)?;
    Ok(TableStatement {
        name: ident_name(&name),
        location,
        columns,
        primary_key,
        options,
    })
}

/// The columns of a source's or table's statement.
type Head = (
    Ident,
    Location,
    Vec<datafusion::sql::sqlparser::ast::ColumnDef>,
    Vec<datafusion::sql::sqlparser::ast::TableConstraint>,
);

/// Parses `CREATE <KIND> name (columns...)` of a statement whose shape is `usage`: its name,
/// where it is, its columns and constraints.
fn parse_head(
    path: &str,
    p: &mut Parser<'_>,
    start: Location,
    usage: &str,
) -> Result<Head, PipelineError> {
    let err = |e| parser_error(path, e, start);
    p.expect_keyword(Keyword::CREATE).map_err(err)?;
    let kind = p.next_token().token.to_string().to_ascii_uppercase();
    let name = p.parse_identifier().map_err(err)?;
    let location = Location::from_sql(name.span.start);
    usable_name(path, &name, location, "SELECT * FROM {}")?;
    if p.peek_token().token != Token::LParen {
        return Err(PipelineError::new(
            path,
            location,
            format!("CREATE {kind} needs its columns: {usage}"),
        ));
    }
    let (columns, constraints) = p.parse_columns().map_err(err)?;
    Ok((name, location, columns, constraints))
}

/// Parses `CREATE SINK name WITH (key = 'value', ...)`.
pub(super) fn parse_sink(
    path: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<SinkStatement, PipelineError> {
    let (start, mut p) = statement_parser(tokens);
    let err = |e| parser_error(path, e, start);
    p.expect_keyword(Keyword::CREATE).map_err(err)?;
    p.next_token(); // SINK
    let name = p.parse_identifier().map_err(err)?;
    let location = Location::from_sql(name.span.start);
    usable_name(path, &name, location, "INSERT INTO {} SELECT 1")?;
    let options = parse_with(path, &mut p, location)?;
    Ok(SinkStatement {
        name: ident_name(&name),
        location,
        options,
    })
}

/// Refuses a name that the statements using it could not parse (a reserved word such as
/// `local` or `select`, unquoted): `usage` is such a statement, `{}` standing for the name.
fn usable_name(path: &str, name: &Ident, at: Location, usage: &str) -> Result<(), PipelineError> {
    if name.quote_style.is_some() {
        return Ok(());
    }
    let sql = usage.replace("{}", &name.value);
    if Parser::parse_sql(&GenericDialect {}, &sql).is_ok() {
        return Ok(());
    }
    Err(PipelineError::new(
        path,
        at,
        format!(
            "'{0}' is a reserved word in SQL: `{sql}` would not parse. Quote it everywhere (\"{0}\") or choose another name",
            name.value
        ),
    ))
}

/// Parses `WITH (key = value, ...)` and the end of the statement.
fn parse_with(path: &str, p: &mut Parser<'_>, stmt: Location) -> Result<Options, PipelineError> {
    let here = |t: &TokenWithSpan| Location::from_sql(t.span.start);
    let fail = |t: &TokenWithSpan, m: &str| {
        let found = if t.token == Token::EOF {
            "end of statement".to_string()
        } else {
            format!("'{}'", t.token)
        };
        Err(PipelineError::new(
            path,
            here(t),
            format!("{m}, found {found}"),
        ))
    };
    let t = p.next_token();
    if !matches!(&t.token, Token::Word(w) if w.keyword == Keyword::WITH) {
        return fail(&t, "expected WITH (connector = '...', ...)");
    }
    let t = p.next_token();
    if t.token != Token::LParen {
        return fail(&t, "expected '(' after WITH");
    }
    let mut entries: Vec<OptionEntry> = Vec::new();
    loop {
        let k = p.next_token();
        let key = match &k.token {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.to_ascii_lowercase(),
            Token::RParen if entries.is_empty() => break,
            _ => return fail(&k, "expected an option name"),
        };
        let mut key = key;
        // dotted keys such as json.path
        while p.peek_token().token == Token::Period {
            p.next_token();
            let part = p.next_token();
            match &part.token {
                Token::Word(w) => {
                    key.push('.');
                    key.push_str(&w.value.to_ascii_lowercase());
                }
                _ => return fail(&part, "expected an option name after '.'"),
            }
        }
        let eq = p.next_token();
        if eq.token != Token::Eq {
            return fail(&eq, &format!("expected '=' after option '{key}'"));
        }
        let v = p.next_token();
        let value = match &v.token {
            Token::SingleQuotedString(s) => s.clone(),
            Token::Number(n, _) => n.clone(),
            Token::Word(w) if w.quote_style.is_none() => w.value.clone(),
            _ => return fail(&v, &format!("expected a value for option '{key}'")),
        };
        if let Some(prev) = entries.iter().find(|e| e.key == key) {
            return Err(PipelineError::new(
                path,
                here(&k),
                format!(
                    "option '{key}' given twice (first at line {})",
                    prev.key_location.line
                ),
            ));
        }
        entries.push(OptionEntry {
            key,
            value,
            key_location: here(&k),
            value_location: here(&v),
        });
        let sep = p.next_token();
        match sep.token {
            Token::Comma => continue,
            Token::RParen => break,
            _ => return fail(&sep, "expected ',' or ')' in WITH (...)"),
        }
    }
    let end = p.next_token();
    if end.token != Token::EOF {
        return fail(&end, "expected ';' after WITH (...)");
    }
    Ok(Options::new(path, stmt, entries))
}
