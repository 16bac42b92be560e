//! Reading the `pattern` plugin's config (the JSON form of its YAML section;
//! the schema is documented at the crate root): `null`, `{}`, or
//! `{"rules": [...]}` with `rules` a list (or `null`) of rule mappings.
//!
//! Every error about a rule reads
//! `` rules[INDEX] (protocol "NAME"): key `KEY`: WHAT IS WRONG `` — the
//! index counts from 0, and `(no protocol)` replaces the protocol when the
//! rule has no usable one. Only the first error is reported.

use crate::rules::{DEFAULT_MAX_LENGTH, MAX_LENGTH, Matcher, RegexMatcher, Rule};
use refractium_plugin_sdk::Transport;
use serde_json::{Map, Value};

/// Every key a rule may have.
pub(crate) const KEYS: &[&str] = &[
    "protocol",
    "prefix",
    "prefixes",
    "hex",
    "regex",
    "offset",
    "min_length",
    "max_length",
    "transport",
    "attributes",
];

/// The keys that say what to look for; a rule has exactly one.
const PATTERN_KEYS: &[&str] = &["prefix", "prefixes", "hex", "regex"];

/// The rules of `config`, in order.
pub fn parse(config: &str) -> Result<Vec<Rule>, String> {
    let value: Value = serde_json::from_str(config).map_err(|err| format!("config is not valid JSON: {err}"))?;
    let rules = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => {
            if let Some(key) = map.keys().find(|key| *key != "rules") {
                return Err(format!("unknown key `{key}` (the only key is `rules`, a list of rules)"));
            }
            map.get("rules").cloned().unwrap_or(Value::Null)
        }
        other => return Err(format!("must be a mapping with a `rules` list, found {}", describe(&other))),
    };
    match rules {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().enumerate().map(|(index, item)| rule(index, item)).collect(),
        other => Err(format!("key `rules`: must be a list of rules, found {}", describe(&other))),
    }
}

/// Names a rule in error messages.
struct Ctx {
    index: usize,
    protocol: Option<String>,
}

impl Ctx {
    /// An error about `key` of the rule.
    fn err(&self, key: &str, what: impl std::fmt::Display) -> String {
        self.rule_err(format_args!("key `{key}`: {what}"))
    }

    /// An error about the rule as a whole.
    fn rule_err(&self, what: impl std::fmt::Display) -> String {
        match &self.protocol {
            Some(protocol) => format!("rules[{}] (protocol {protocol:?}): {what}", self.index),
            None => format!("rules[{}] (no protocol): {what}", self.index),
        }
    }
}

fn rule(index: usize, value: &Value) -> Result<Rule, String> {
    let Value::Object(map) = value else {
        return Err(format!("rules[{index}]: must be a mapping with a `protocol` key, found {}", describe(value)));
    };
    let protocol = match map.get("protocol") {
        Some(Value::String(name)) if !name.trim().is_empty() => Some(name.clone()),
        _ => None,
    };
    let ctx = Ctx { index, protocol };
    if let Some(key) = map.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(ctx.err(key, format!("unknown key (a rule has {})", KEYS.join(", "))));
    }
    let Some(protocol) = ctx.protocol.clone() else {
        return Err(ctx.err(
            "protocol",
            match map.get("protocol") {
                None => "required (the protocol name to report)".to_string(),
                Some(Value::String(_)) => "must not be empty".to_string(),
                Some(other) => format!("must be text, found {}", as_text(other)),
            },
        ));
    };
    let given: Vec<&str> = PATTERN_KEYS.iter().copied().filter(|key| map.contains_key(*key)).collect();
    let matcher = match given.as_slice() {
        [] => return Err(ctx.rule_err("needs one of the keys `prefix`, `prefixes`, `hex`, `regex`")),
        [key] => *key,
        [first, second, ..] => {
            return Err(ctx.err(second, format!("not allowed together with `{first}`: give exactly one pattern")));
        }
    };
    let offset = optional_count(&ctx, map, "offset", 0)?.unwrap_or(0);
    let min_length = optional_count(&ctx, map, "min_length", 0)?.unwrap_or(0);
    let max_length = optional_count(&ctx, map, "max_length", 1)?;
    if matcher == "regex" && map.contains_key("offset") {
        return Err(ctx.err("offset", "applies to `prefix`, `prefixes` and `hex` only (start a regex with `^.{N}`)"));
    }
    if matcher != "regex" && max_length.is_some() {
        return Err(ctx.err("max_length", "applies to `regex` only (fixed bytes need offset + length bytes)"));
    }
    let matcher = match matcher {
        "regex" => {
            let max_length = max_length.unwrap_or(DEFAULT_MAX_LENGTH);
            if min_length > max_length {
                return Err(ctx.err("min_length", format!("{min_length} is more than max_length ({max_length})")));
            }
            let pattern = regex_text(text(&ctx, map, "regex")?).map_err(|what| ctx.err("regex", what))?;
            Matcher::Regex(Box::new(RegexMatcher::new(&pattern, max_length).map_err(|what| ctx.err("regex", what))?))
        }
        key => {
            let alternatives = fixed_bytes(&ctx, map, key)?;
            let longest = alternatives.iter().map(Vec::len).max().unwrap_or(0);
            if offset.saturating_add(longest) > MAX_LENGTH {
                let key = if offset > 0 { "offset" } else { key };
                return Err(ctx.err(
                    key,
                    format!("offset {offset} plus the pattern's {longest} bytes is more than {MAX_LENGTH}"),
                ));
            }
            Matcher::Bytes { offset, alternatives }
        }
    };
    let transport = match map.get("transport") {
        None => None,
        Some(Value::String(t)) if t == "any" => None,
        Some(Value::String(t)) if t == "tcp" => Some(Transport::Tcp),
        Some(Value::String(t)) if t == "udp" => Some(Transport::Udp),
        Some(other) => return Err(ctx.err("transport", format!("must be tcp, udp or any, found {}", as_text(other)))),
    };
    let attributes = match map.get("attributes") {
        None => Vec::new(),
        Some(value) => attributes(&ctx, value)?,
    };
    fits_the_host(&ctx, index, &protocol, &attributes)?;
    Ok(Rule { protocol, matcher, min_length, transport, attributes })
}

/// The non-empty byte strings of a `prefix`, `prefixes` or `hex` key.
fn fixed_bytes(ctx: &Ctx, map: &Map<String, Value>, key: &str) -> Result<Vec<Vec<u8>>, String> {
    let non_empty = |bytes: Vec<u8>, key: &str| {
        if bytes.is_empty() { Err(ctx.err(key, "must not be empty")) } else { Ok(bytes) }
    };
    match key {
        "prefix" => Ok(vec![non_empty(unescape(text(ctx, map, key)?).map_err(|what| ctx.err(key, what))?, key)?]),
        "hex" => Ok(vec![non_empty(hex(text(ctx, map, key)?).map_err(|what| ctx.err(key, what))?, key)?]),
        _ => {
            let items = match map.get(key) {
                Some(Value::Array(items)) if !items.is_empty() => items,
                Some(Value::Array(_)) => return Err(ctx.err(key, "must list at least one prefix")),
                Some(other) => return Err(ctx.err(key, format!("must be a list of texts, found {}", as_text(other)))),
                None => return Err(ctx.err(key, "missing")),
            };
            let mut alternatives = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let key = format!("{key}[{i}]");
                let Value::String(item) = item else {
                    return Err(ctx.err(&key, format!("must be text, found {}", as_text(item))));
                };
                alternatives.push(non_empty(unescape(item).map_err(|what| ctx.err(&key, what))?, &key)?);
            }
            Ok(alternatives)
        }
    }
}

/// The text of a key that must be text.
fn text<'a>(ctx: &Ctx, map: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match map.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(ctx.err(key, format!("must be text, found {}", as_text(other)))),
        None => Err(ctx.err(key, "missing")),
    }
}

/// An optional whole number from `min` to [`MAX_LENGTH`].
fn optional_count(ctx: &Ctx, map: &Map<String, Value>, key: &str, min: usize) -> Result<Option<usize>, String> {
    let Some(value) = map.get(key) else { return Ok(None) };
    match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(n) if (min..=MAX_LENGTH).contains(&n) => Ok(Some(n)),
        _ => Err(ctx.err(key, format!("must be a whole number from {min} to {MAX_LENGTH}, found {}", describe(value)))),
    }
}

/// The host's bounds on an answer (`refractium::plugin::sandbox`): each
/// string at most 1,024 bytes, at most 64 attributes, at most 16 KiB of
/// strings in all. A rule whose match would pass them is refused here: the
/// host fails a call with a larger answer and counts it against the plugin.
pub const MAX_STRING: usize = 1024;
/// Most attributes of a match, `rule` included.
pub const MAX_ATTRIBUTES: usize = 64;
/// Most bytes of strings in a match.
pub const MAX_OUTPUT: usize = 16 << 10;

fn fits_the_host(ctx: &Ctx, index: usize, protocol: &str, attributes: &[(String, String)]) -> Result<(), String> {
    if protocol.len() > MAX_STRING {
        return Err(ctx.err("protocol", format!("{} bytes, more than {MAX_STRING}", protocol.len())));
    }
    if attributes.len() + 1 > MAX_ATTRIBUTES {
        let most = MAX_ATTRIBUTES - 1;
        return Err(
            ctx.err("attributes", format!("{} attributes, more than {most} (`rule` is one more)", attributes.len()))
        );
    }
    let mut total = protocol.len() + "rule".len() + index.to_string().len();
    for (name, value) in attributes {
        for (what, text) in [("name", name), ("value", value)] {
            if text.len() > MAX_STRING {
                let key = format!("attributes.{name}");
                return Err(ctx.err(&key, format!("the {what} has {} bytes, more than {MAX_STRING}", text.len())));
            }
        }
        total += name.len() + value.len();
    }
    if total > MAX_OUTPUT {
        return Err(ctx.rule_err(format!("the protocol and attributes have {total} bytes, more than {MAX_OUTPUT}")));
    }
    Ok(())
}

/// `attributes`: a mapping of names to text, numbers or booleans.
fn attributes(ctx: &Ctx, value: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = value else {
        return Err(ctx.err("attributes", format!("must be a mapping of names to values, found {}", describe(value))));
    };
    let mut attributes = Vec::with_capacity(map.len());
    for (name, value) in map {
        let key = format!("attributes.{name}");
        if name.is_empty() {
            return Err(ctx.err("attributes", "an attribute name is empty"));
        }
        if name == "rule" {
            return Err(ctx.err(&key, "`rule` is reserved: it is set to the rule's index"));
        }
        let value = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ctx.err(&key, format!("must be text, a number or a boolean, found {}", describe(other))));
            }
        };
        attributes.push((name.clone(), value));
    }
    Ok(attributes)
}

/// The bytes of escaped text: `\r \n \t \0 \\ \xNN`, other characters
/// U+0000..=U+00FF as the byte of the same value.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut chars = text.chars().enumerate();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            bytes.push(byte(c, at)?);
            continue;
        }
        let escaped = match chars.next() {
            Some((_, 'r')) => b'\r',
            Some((_, 'n')) => b'\n',
            Some((_, 't')) => b'\t',
            Some((_, '0')) => 0,
            Some((_, '\\')) => b'\\',
            Some((_, 'x')) => {
                let high = chars.next().and_then(|(_, c)| c.to_digit(16));
                let low = chars.next().and_then(|(_, c)| c.to_digit(16));
                match (high, low) {
                    (Some(high), Some(low)) => u8::try_from(high * 16 + low).unwrap_or(u8::MAX),
                    _ => return Err(format!("`\\x` at character {} needs two hex digits", at + 1)),
                }
            }
            Some((_, other)) => {
                return Err(format!(
                    "unknown escape `\\{other}` at character {} (use \\r \\n \\t \\0 \\\\ or \\xNN)",
                    at + 1
                ));
            }
            None => return Err("ends with a lone `\\` (write `\\\\` for a backslash)".to_string()),
        };
        bytes.push(escaped);
    }
    Ok(bytes)
}

/// The byte a character of config text stands for.
fn byte(c: char, at: usize) -> Result<u8, String> {
    u8::try_from(u32::from(c)).map_err(|_| {
        format!(
            "character {c:?} (U+{:04X}) at character {} is not a byte: write bytes as \\xNN (UTF-8 `é` is \\xc3\\xa9)",
            u32::from(c),
            at + 1
        )
    })
}

/// Bytes written in hex, whitespace allowed anywhere.
pub fn hex(text: &str) -> Result<Vec<u8>, String> {
    let mut digits = Vec::with_capacity(text.len());
    for (at, c) in text.chars().enumerate() {
        if c.is_whitespace() {
            continue;
        }
        match c.to_digit(16) {
            Some(d) => digits.push(u8::try_from(d).unwrap_or(0)),
            None => return Err(format!("{c:?} at character {} is not a hex digit", at + 1)),
        }
    }
    if digits.len() % 2 == 1 {
        return Err(format!("has an odd number of hex digits ({}): each byte takes two", digits.len()));
    }
    Ok(digits.chunks(2).map(|pair| pair.iter().fold(0u8, |acc, d| acc.wrapping_mul(16).wrapping_add(*d))).collect())
}

/// A regex as given, with each character U+0080..=U+00FF replaced by the
/// escape `\xNN` of its byte (a `\` escaping it is dropped: an escaped
/// literal is the literal); characters above U+00FF are an error.
pub fn regex_text(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut escaped = false;
    for (at, c) in text.chars().enumerate() {
        if c.is_ascii() {
            out.push(c);
            escaped = c == '\\' && !escaped;
            continue;
        }
        let b = byte(c, at)?;
        if escaped {
            out.pop();
        }
        out.push_str(&format!("\\x{b:02X}"));
        escaped = false;
    }
    Ok(out)
}

/// A JSON value in words, for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("the text {:?}…", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("the text {s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

/// [`describe`], with a hint for a number or boolean where text is wanted
/// (YAML reads `hex: 1234` or `protocol: yes` as one).
fn as_text(value: &Value) -> String {
    match value {
        Value::Number(_) | Value::Bool(_) => format!("{} (quote it in YAML)", describe(value)),
        other => describe(other),
    }
}
