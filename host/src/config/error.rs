//! What a config error looks like to an operator: one line per problem,
//! `file:line:column: key: message`, every problem of the file at once.
//! Also turns a serde_yaml error (syntax, type, unknown key) into such a
//! line, with the key path serde knew or the locator can find.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::{Locator, Pos};

/// One thing wrong with a config file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// 1-based column of the offending key, when known.
    pub column: Option<usize>,
    /// Dotted key path, like `routes[2].to` or `listeners[0].bind`; empty
    /// when the problem is not about one key (a syntax error at the top).
    pub key: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl Problem {
    /// A problem with no position (an unreadable file, say).
    pub fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Problem {
        let (key, message) = (key.into(), message.into());
        Problem { file: file.to_path_buf(), line: None, column: None, key, message }
    }

    /// The same problem at `pos`.
    pub(crate) fn at(mut self, pos: Option<Pos>) -> Problem {
        self.line = pos.map(|p| p.line);
        self.column = pos.map(|p| p.column);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.as_os_str().is_empty() {
            f.write_str("<built-in config>")?;
        } else {
            write!(f, "{}", self.file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one config file; `Display` prints one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order of the file.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// Wraps problems, sorting them by position (unknown positions last).
    pub fn new(mut problems: Vec<Problem>) -> ConfigError {
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        ConfigError { problems }
    }
}

impl From<Problem> for ConfigError {
    fn from(problem: Problem) -> Self {
        ConfigError { problems: vec![problem] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Turns a serde_yaml error into a located problem; `None` for a duplicate
/// key the locator has already reported (it names both places). The
/// locator cannot follow a file broken further on, so a duplicate it missed
/// is still reported here.
pub(crate) fn from_serde(err: &serde_yaml::Error, file: &Path, loc: &Locator) -> Option<Problem> {
    let pos = err.location().map(|l| Pos { line: l.line(), column: l.column() });
    let text = strip_marks(&err.to_string());
    let duplicate = text.contains("duplicate field") || text.contains("duplicate entry");
    if duplicate && !loc.duplicates().is_empty() {
        return None;
    }
    // serde_yaml prefixes messages with the path it was at (`routes[1]: ...`);
    // syntax errors come without one.
    let (path, message) = match text.split_once(": ") {
        Some((path, rest)) if !path.contains(char::is_whitespace) => (Some(path), rest),
        _ => (None, text.as_str()),
    };
    let named = named_field(message);
    let key = match (path, named) {
        (Some(path), Some(field)) => format!("{path}.{field}"),
        (Some(path), None) => path.to_owned(),
        (None, Some(field)) => field.to_owned(),
        (None, None) => pos.and_then(|p| loc.path_before(p)).unwrap_or_default().to_owned(),
    };
    let message = match message.strip_prefix("unknown field") {
        Some(rest) => format!("unknown key{rest}"),
        None => message.to_owned(),
    };
    let pos = match named {
        Some(_) if message.starts_with("unknown key") => loc.locate(&key).or(pos),
        _ => pos,
    };
    Some(Problem::new(file, key, message).at(pos))
}

/// The field an "unknown field `x`" or "missing field `x`" message names.
fn named_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next()
}

/// Removes every " at line N column M" (and " at position N") serde_yaml
/// appends: the problem carries the position itself.
fn strip_marks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        match mark_len(after) {
            Some(n) => rest = &after[n..],
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Length of a leading `line N column M` or `position N`, if there is one.
fn mark_len(s: &str) -> Option<usize> {
    fn number(s: &str) -> Option<usize> {
        let n = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        (n > 0).then_some(n)
    }
    if let Some(r) = s.strip_prefix("line ") {
        let a = number(r)?;
        let r2 = r[a..].strip_prefix(" column ")?;
        let b = number(r2)?;
        Some(5 + a + 8 + b)
    } else {
        let r = s.strip_prefix("position ")?;
        Some(9 + number(r)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_positions() {
        let text =
            "did not find expected ',' or ']' at line 4 column 9, while parsing a flow sequence at line 3 column 11";
        assert_eq!(strip_marks(text), "did not find expected ',' or ']', while parsing a flow sequence");
        assert_eq!(strip_marks("look at this at position 7"), "look at this");
    }

    #[test]
    fn displays_with_and_without_position() {
        let p = Problem::new(Path::new("a.yaml"), "routes[2].to", "no backend named `x`");
        assert_eq!(p.to_string(), "a.yaml: routes[2].to: no backend named `x`");
        let p = p.at(Some(Pos { line: 12, column: 9 }));
        assert_eq!(p.to_string(), "a.yaml:12:9: routes[2].to: no backend named `x`");
        let p = Problem::new(Path::new("a.yaml"), "", "cannot read");
        assert_eq!(p.to_string(), "a.yaml: cannot read");
    }
}
