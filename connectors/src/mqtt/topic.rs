//! Topic patterns: `factory/{line}/{machine}/#` subscribes to `factory/+/+/#` and captures
//! the named levels of each message's topic; and topic templates for the sink,
//! `alerts/{machine}`, filled from a row's columns.

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Must be this text.
    Exact(String),
    /// Any one level (`+`), captured under a name when written `{name}`.
    One(Option<String>),
    /// Any number of levels (`#`, last only).
    Rest,
}

/// A subscription pattern with named levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    filter: String,
    levels: Vec<Level>,
}

impl TopicPattern {
    /// Parses `a/{name}/+/#`.
    pub fn parse(pattern: &str) -> Result<TopicPattern, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err("empty topic".into());
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let level = if *p == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("'#' must be the last level in '{pattern}'"));
                }
                Level::Rest
            } else if *p == "+" {
                Level::One(None)
            } else if let Some(name) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                let name = name.trim();
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(format!(
                        "bad capture '{p}' in '{pattern}': write {{column_name}}"
                    ));
                }
                Level::One(Some(name.to_ascii_lowercase()))
            } else if p.contains(['+', '#', '{', '}']) {
                return Err(format!(
                    "'{p}' in '{pattern}': wildcards and {{name}} must fill a whole level"
                ));
            } else {
                Level::Exact(p.to_string())
            };
            levels.push(level);
        }
        let filter = levels
            .iter()
            .map(|l| match l {
                Level::Exact(s) => s.as_str(),
                Level::One(_) => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/");
        Ok(TopicPattern { filter, levels })
    }

    /// The MQTT subscription filter.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Names of the captured levels, in order.
    pub fn captures(&self) -> Vec<&str> {
        self.levels
            .iter()
            .filter_map(|l| match l {
                Level::One(Some(n)) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// If `topic` matches, the captured level values in the order of [`Self::captures`].
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        let mut out = Vec::new();
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return Some(out),
                Level::Exact(s) => {
                    if parts.next()? != s {
                        return None;
                    }
                }
                Level::One(name) => {
                    let p = parts.next()?;
                    if name.is_some() {
                        out.push(p);
                    }
                }
            }
        }
        parts.next().is_none().then_some(out)
    }
}

/// A topic to publish to, with `{column}` parts filled per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

impl TopicTemplate {
    /// Parses `alerts/{machine}/{sensor}`.
    pub fn parse(t: &str) -> Result<TopicTemplate, String> {
        let t = t.trim();
        if t.is_empty() {
            return Err("empty topic".into());
        }
        if t.contains(['+', '#']) {
            return Err(format!(
                "'{t}': a topic to publish to cannot hold '+' or '#'"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in '{t}'"))?;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let name = rest[open + 1..open + close].trim();
            if name.is_empty() {
                return Err(format!("empty {{}} in '{t}'"));
            }
            parts.push(Part::Column(name.to_ascii_lowercase()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched '}}' in '{t}'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(TopicTemplate { parts })
    }

    /// The columns the template names.
    pub fn columns(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Column(c) => Some(c.as_str()),
                Part::Text(_) => None,
            })
            .collect()
    }

    /// The topic with the `i`-th named column replaced by `values[i]`; a `/`, `+` or `#` in
    /// a value becomes `_` so that one value stays one level.
    pub fn render(&self, values: &[&str]) -> String {
        let mut out = String::new();
        let mut i = 0;
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Column(_) => {
                    out.extend(values[i].chars().map(|c| match c {
                        '/' | '+' | '#' => '_',
                        c => c,
                    }));
                    i += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_named_levels() {
        let p = TopicPattern::parse("factory/{line}/{machine}/+/#").unwrap();
        assert_eq!(p.filter(), "factory/+/+/+/#");
        assert_eq!(p.captures(), vec!["line", "machine"]);
        assert_eq!(p.matches("factory/L1/M7/vib/x/y"), Some(vec!["L1", "M7"]));
        assert_eq!(p.matches("factory/L1/M7/vib"), Some(vec!["L1", "M7"]));
        assert_eq!(p.matches("factory/L1/M7"), None);
        assert_eq!(p.matches("plant/L1/M7/vib"), None);
        let q = TopicPattern::parse("a/{Sensor}").unwrap();
        assert_eq!(q.captures(), vec!["sensor"]);
        assert_eq!(q.matches("a/b/c"), None);
        assert_eq!(q.matches("a/"), Some(vec![""]));
        assert!(TopicPattern::parse("a/#/b").is_err());
        assert!(TopicPattern::parse("a/x{y}").is_err());
        assert!(TopicPattern::parse("a/{}").is_err());
    }

    #[test]
    fn templates_fill_columns_and_keep_levels() {
        let t = TopicTemplate::parse("alerts/{machine}/{kind}-x").unwrap();
        assert_eq!(t.columns(), vec!["machine", "kind"]);
        assert_eq!(t.render(&["M1", "a/b"]), "alerts/M1/a_b-x");
        assert!(TopicTemplate::parse("a/+").is_err());
        assert!(TopicTemplate::parse("a/{m").is_err());
        assert_eq!(TopicTemplate::parse("plain").unwrap().render(&[]), "plain");
    }
}
