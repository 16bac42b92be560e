//! The YAML config: parsing into typed structs, defaults, and validation
//! errors that name the file, the line and the key. It owns the schema of
//! DESIGN §5 and nothing else: it does not bind sockets, load plugins or
//! resolve host names. Detector and hook names cannot be checked here
//! (plugins load later), so [`Config::problem_at`] lets the plugin loader
//! report its own problems at the right line.
//!
//! The path of a file: `load` reads it → `locate` indexes every key's
//! position → `raw` deserialises with serde (unknown keys are errors) →
//! `validate` and `sections` fill in `defaults`, parse `units`, check every
//! rule and collect every problem → [`Config`] or a [`ConfigError`] listing
//! them all, one per line: `file:line:column: key: message`.

pub mod defaults;
mod error;
mod locate;
mod raw;
mod sections;
mod types;
mod units;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rules;

use std::path::Path;
use std::sync::Arc;

pub use error::{ConfigError, Problem};
pub use locate::{Pos, Segment};
pub use types::*;
pub use units::{format_duration, format_size, parse_duration, parse_size};

use locate::Locator;

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(Problem::new(path, "", format!("cannot read the config file: {e}")).into()),
    }
}

/// Parses and validates config text. `file` names it in problems, and
/// relative plugin paths are resolved against its directory.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let loc = Locator::new(text);
    let mut problems: Vec<Problem> = loc
        .duplicates()
        .iter()
        .map(|dup| {
            let message = format!("written twice in one mapping (first at line {})", dup.first.line);
            Problem::new(file, dup.path.clone(), message).at(Some(dup.again))
        })
        .collect();
    let mut config = match serde_yaml::from_str::<Option<raw::RawConfig>>(text) {
        Ok(raw) => {
            let (config, more) = validate::build(raw.unwrap_or_default(), file, &loc);
            problems.extend(more);
            config
        }
        Err(e) => {
            problems.extend(error::from_serde(&e, file, &loc));
            Config::default()
        }
    };
    if !problems.is_empty() {
        return Err(ConfigError::new(problems));
    }
    config.source = Source(Some(Arc::new(loc)));
    config.hash = text_hash(text);
    Ok(config)
}

/// The first 16 hex digits of the SHA-256 of `text`.
fn text_hash(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Config {
    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The listener with this name.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The backend pool with this name.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.get(name)
    }

    /// A problem found after parsing (an unknown plugin name, say), located
    /// at `key_path` (`listeners[0].detectors[2]`) or, when that key is not
    /// written in the file, at its nearest written ancestor.
    pub fn problem_at(&self, key_path: &str, message: impl Into<String>) -> Problem {
        let pos = self.source.0.as_ref().and_then(|loc| loc.locate(key_path));
        Problem::new(&self.file, key_path, message).at(pos)
    }

    /// The position of exactly this key path in the file, if it is written.
    pub fn position(&self, path: &[Segment]) -> Option<Pos> {
        self.source.0.as_ref().and_then(|loc| loc.find(path))
    }
}
