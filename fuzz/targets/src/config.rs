//! Fuzz target `config`: the YAML config loader ([`refractium::config::parse`])
//! on any text, as `refractium check` and every reload call it.
//!
//! Any text gives a config or a list of problems, never a panic. Problems
//! are what an operator reads: at least one, each with a message, and a
//! position (when there is one) inside the file: a line from 1 to the
//! number of lines (or the one after the last, where the YAML parser puts
//! the end of a file without a final line feed), a column from 1.

use std::path::Path;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = Path::new("/etc/refractium/fuzz.yaml");
    match refractium::config::parse(text, file) {
        Ok(config) => {
            assert_eq!(config.file, file, "the config forgot its file");
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "an error without a problem for {text:?}");
            // Lines as YAML 1.1 counts them (\r\n counted twice here, as an
            // upper bound): \n, \r, NEL and the Unicode line and paragraph
            // separators each end one.
            let lines = text.split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']).count() + 1;
            for problem in &error.problems {
                assert!(!problem.message.is_empty(), "a problem without a message: {problem:?}");
                assert_eq!(problem.file, file, "a problem about another file: {problem:?}");
                if let Some(line) = problem.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {problem:?} in {text:?}");
                }
                if let Some(column) = problem.column {
                    assert!(column >= 1, "column {column}: {problem:?}");
                }
            }
            assert!(!error.to_string().is_empty(), "an error that prints nothing");
        }
    }
}
