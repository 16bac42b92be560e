//! One configured rule and how it decides about the bytes seen so far (the
//! config schema is documented at the crate root).
//!
//! - **Fixed bytes** (`prefix`, `prefixes`, `hex`) at `offset` need
//!   `offset + length` bytes: with fewer, the rule waits
//!   (`NeedMore(offset + length)`) as long as the bytes already there agree
//!   with the pattern, and answers `NoMatch` as soon as one does not. Of
//!   several `prefixes`, any one that matches makes the rule match; while
//!   none does, the rule waits for the shortest one still possible.
//! - **A regex** runs on the first `max_length` bytes. No match yet: once
//!   `max_length` bytes have been seen, `NoMatch`; before that, a regex
//!   anchored at the start (`^…`) is walked with a lazy DFA, and answers
//!   `NoMatch` as soon as no continuation of the bytes can match (so
//!   `^NICK ` rejects `NX` at the second byte), else `NeedMore(0)`; an
//!   unanchored regex can match anywhere, so it waits (`NeedMore(0)`) until
//!   `max_length` bytes.
//! - **`min_length`**: a rule that matches with fewer bytes answers
//!   `NeedMore(min_length)` instead. It never delays a `NoMatch`.
//!
//! Every `NeedMore(n)` has `n == 0` or `n > data.len()`.

use refractium_plugin_sdk::Transport;
use regex::bytes::Regex;
use regex_automata::Input;
use regex_automata::hybrid::dfa::{Cache, DFA};
use std::cell::RefCell;

/// Largest `max_length`, `min_length` and `offset + length` accepted.
pub const MAX_LENGTH: usize = 16 * 1024;
/// `max_length` of a regex rule that does not set one.
pub const DEFAULT_MAX_LENGTH: usize = 1024;

/// One rule of the config.
#[derive(Debug)]
pub struct Rule {
    /// Protocol reported on a match.
    pub protocol: String,
    pub matcher: Matcher,
    /// No match is reported before this many bytes.
    pub min_length: usize,
    /// Only clients of this transport; `None` = any.
    pub transport: Option<Transport>,
    /// Reported on a match, after `rule`.
    pub attributes: Vec<(String, String)>,
}

/// What a rule looks for.
#[derive(Debug)]
pub enum Matcher {
    /// Any of `alternatives` (non-empty byte strings) at `offset`.
    Bytes {
        offset: usize,
        alternatives: Vec<Vec<u8>>,
    },
    Regex(Box<RegexMatcher>),
}

/// A rule's answer about the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Match,
    /// Total bytes wanted, 0 if unknown.
    NeedMore(usize),
    NoMatch,
}

impl Rule {
    /// Whether the rule applies to clients of `transport`.
    pub fn serves(&self, transport: Transport) -> bool {
        self.transport.is_none_or(|t| t == transport)
    }

    /// The rule's decision about `data`, every byte the client sent so far.
    pub fn decide(&self, data: &[u8]) -> Decision {
        let decision = match &self.matcher {
            Matcher::Bytes { offset, alternatives } => bytes_at(*offset, alternatives, data),
            Matcher::Regex(regex) => regex.decide(data),
        };
        match decision {
            Decision::Match if data.len() < self.min_length => Decision::NeedMore(self.min_length),
            other => other,
        }
    }
}

/// Any of `alternatives` at `offset` of `data`.
fn bytes_at(offset: usize, alternatives: &[Vec<u8>], data: &[u8]) -> Decision {
    let seen = data.get(offset..).unwrap_or_default();
    let mut wait: Option<usize> = None;
    for pattern in alternatives {
        let common = seen.len().min(pattern.len());
        if seen.get(..common) != pattern.get(..common) {
            continue;
        }
        if common == pattern.len() {
            return Decision::Match;
        }
        let end = offset.saturating_add(pattern.len());
        wait = Some(wait.map_or(end, |w| w.min(end)));
    }
    wait.map_or(Decision::NoMatch, Decision::NeedMore)
}

/// A compiled `regex` rule.
pub struct RegexMatcher {
    regex: Regex,
    max_length: usize,
    /// For a regex anchored at the start: the lazy DFA that tells when no
    /// continuation can match, and its cache (reused between calls).
    anchored: Option<(DFA, RefCell<Cache>)>,
}

impl std::fmt::Debug for RegexMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegexMatcher")
            .field("regex", &self.regex.as_str())
            .field("max_length", &self.max_length)
            .field("anchored", &self.anchored.is_some())
            .finish()
    }
}

/// Size limit of each compiled form of one regex (the plugin runs under a
/// memory cap, 16 MiB by default).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Deepest nesting of groups and repetitions in one regex. Compiling
/// recurses once per level, and the plugin runs on a 64 KiB stack: a regex
/// of a few hundred stacked operators (`a*****…`) overflowed it (found by
/// fuzzing) where it should be a config error.
pub const REGEX_NEST_LIMIT: u32 = 32;

impl RegexMatcher {
    /// Compile `pattern` (ASCII, see `config`) to look at `max_length` bytes.
    /// `Err` is a one-line reason.
    pub fn new(pattern: &str, max_length: usize) -> Result<Self, String> {
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .parse(pattern)
            .map_err(|err| syntax_error(pattern, &err))?;
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .nest_limit(REGEX_NEST_LIMIT)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| one_line(&err.to_string()))?;
        if regex.is_match(b"") {
            return Err("matches zero bytes, so it would match every client".to_string());
        }
        let anchored = if hir.properties().look_set_prefix().contains(regex_syntax::hir::Look::Start) {
            let nfa = regex_automata::nfa::thompson::Compiler::new()
                .configure(
                    regex_automata::nfa::thompson::Config::new().utf8(false).nfa_size_limit(Some(REGEX_SIZE_LIMIT)),
                )
                .build_from_hir(&hir)
                .map_err(|err| one_line(&err.to_string()))?;
            let dfa = DFA::builder()
                .configure(DFA::config().cache_capacity(REGEX_SIZE_LIMIT))
                .build_from_nfa(nfa)
                .map_err(|err| one_line(&err.to_string()))?;
            let cache = RefCell::new(dfa.create_cache());
            Some((dfa, cache))
        } else {
            None
        };
        Ok(RegexMatcher { regex, max_length, anchored })
    }

    fn decide(&self, data: &[u8]) -> Decision {
        let window = data.get(..self.max_length).unwrap_or(data);
        if self.regex.is_match(window) {
            Decision::Match
        } else if window.len() >= self.max_length || self.cannot_match(window) {
            Decision::NoMatch
        } else {
            Decision::NeedMore(0)
        }
    }

    /// True when the regex is anchored and no bytes appended to `window` can
    /// make it match; false when they might, or when the DFA cannot tell
    /// (it gives up when its cache thrashes, which keeps the call short).
    fn cannot_match(&self, window: &[u8]) -> bool {
        let Some((dfa, cache)) = &self.anchored else { return false };
        let Ok(mut cache) = cache.try_borrow_mut() else { return false };
        let cache = &mut *cache;
        let Ok(mut state) = dfa.start_state_forward(cache, &Input::new(window)) else { return false };
        for &byte in window {
            match dfa.next_state(cache, state, byte) {
                Ok(next) if next.is_dead() => return true,
                Ok(next) if next.is_quit() => return false,
                Ok(next) => state = next,
                Err(_) => return false,
            }
        }
        false
    }
}

/// A regex syntax error on one line: what is wrong, and where.
fn syntax_error(pattern: &str, err: &regex_syntax::Error) -> String {
    let (what, span) = match err {
        regex_syntax::Error::Parse(e) => (e.kind().to_string(), *e.span()),
        regex_syntax::Error::Translate(e) => (e.kind().to_string(), *e.span()),
        other => return one_line(&other.to_string()),
    };
    let part = pattern.get(span.start.offset..span.end.offset).unwrap_or_default();
    let at = span.start.offset + 1;
    if part.is_empty() {
        format!("{what} (at character {at})")
    } else {
        format!("{what}: `{part}` (at character {at})")
    }
}

/// `text` with its lines joined by spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
