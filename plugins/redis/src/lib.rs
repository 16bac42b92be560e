//! Built-in `redis` detector: the first command of a Redis client, in RESP
//! (`*<n>\r\n` with 1 ≤ n ≤ [`MAX_ARGS`], then the command name as a bulk
//! string `$<len>\r\n<name>\r\n`) or as an inline command (`PING\r\n`,
//! `HELLO 3\r\n`: a whole line starting with the command word). The name must
//! be a known Redis command, in any case. Attribute: `command`, upper case.
//! Inline, only the commands people type that way are taken, and only when
//! their arguments fit ([`inline`]): a line of English that starts with a
//! command's name ("Set the table for dinner") is not a Redis command.
//!
//! RESP numbers are strict (digits only, no leading zero). An inline line
//! must end (CR LF or LF) within [`INLINE_MAX`] bytes and hold only printable
//! characters; to leave HTTP alone it must not contain ` HTTP/` and its first
//! argument must not start with `/` (so `GET / HTTP/1.1` and the HTTP/0.9
//! `GET /path` are refused). Limits: memcached's text commands that share a
//! name with Redis ones (`get k\r\n`) are indistinguishable and match.

mod commands;
mod inline;

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

/// Most arguments accepted in the first RESP command.
pub const MAX_ARGS: u32 = 1024;
/// Longest inline line waited for, its end included.
pub const INLINE_MAX: usize = 4096;

pub struct Redis;

impl Detector for Redis {
    const NAME: &'static str = "redis";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Redis)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        let found = match data.first() {
            None => return Verdict::NeedMore(1),
            Some(b'*') => resp(data),
            Some(_) => inline(data),
        };
        match found {
            Ok(command) => Verdict::Matched(Detection::new("redis").attr("command", command)),
            Err(verdict) => verdict,
        }
    }
}

/// `*<n>\r\n$<len>\r\n<name>\r\n`.
fn resp(data: &[u8]) -> Result<&'static str, Verdict> {
    let (args, pos) = number(data, 1, 4)?;
    if !(1..=MAX_ARGS).contains(&args) {
        return Err(Verdict::NoMatch);
    }
    match data.get(pos) {
        Some(b'$') => {}
        Some(_) => return Err(Verdict::NoMatch),
        None => return Err(Verdict::NeedMore(0)),
    }
    let (len, start) = number(data, pos + 1, 2)?;
    let len = usize::try_from(len).map_err(|_| Verdict::NoMatch)?;
    if len > commands::MAX_LEN {
        return Err(Verdict::NoMatch);
    }
    let end = start + len;
    let name = data.get(start..end.min(data.len())).unwrap_or_default();
    if !commands::is_prefix(name, Some(len)) {
        return Err(Verdict::NoMatch);
    }
    match data.get(end..end + 2) {
        Some(b"\r\n") => commands::find(name).ok_or(Verdict::NoMatch),
        Some(_) => Err(Verdict::NoMatch),
        None if data.get(end).is_some_and(|&b| b != b'\r') => Err(Verdict::NoMatch),
        None => Err(Verdict::NeedMore(end + 2)),
    }
}

/// A decimal number of 1..=`max_digits` digits without a leading zero at
/// `data[start..]`, then CR LF: its value and the index after the LF.
fn number(data: &[u8], start: usize, max_digits: usize) -> Result<(u32, usize), Verdict> {
    let mut value: u32 = 0;
    for (i, &b) in data.get(start..).unwrap_or_default().iter().enumerate() {
        match b {
            b'0' if i == 0 => return Err(Verdict::NoMatch),
            b'0'..=b'9' if i < max_digits => value = value * 10 + u32::from(b - b'0'),
            b'\r' if i > 0 => {
                return match data.get(start + i + 1) {
                    Some(b'\n') => Ok((value, start + i + 2)),
                    Some(_) => Err(Verdict::NoMatch),
                    None => Err(Verdict::NeedMore(start + i + 2)),
                };
            }
            _ => return Err(Verdict::NoMatch),
        }
    }
    Err(Verdict::NeedMore(0))
}

/// `COMMAND[ args]\r\n` on one line.
fn inline(data: &[u8]) -> Result<&'static str, Verdict> {
    let word_end = data.iter().position(|&b| !(b.is_ascii_alphabetic() || b == b'_'));
    let word = data.get(..word_end.unwrap_or(data.len())).unwrap_or_default();
    if word.is_empty() || word.len() > inline::MAX_LEN || !inline::is_prefix(word) {
        return Err(Verdict::NoMatch);
    }
    let Some(word_end) = word_end else { return Err(Verdict::NeedMore(0)) };
    let command = match data.get(word_end) {
        Some(b' ' | b'\r' | b'\n') => inline::find(word).ok_or(Verdict::NoMatch)?,
        _ => return Err(Verdict::NoMatch),
    };
    let rest = data.get(word_end..).unwrap_or_default();
    let first_arg = rest.iter().find(|&&b| b != b' ' && b != b'\t');
    if first_arg == Some(&b'/') {
        return Err(Verdict::NoMatch);
    }
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        let ok = rest.iter().enumerate().all(|(i, &b)| line_byte(b) || (b == b'\r' && i + 1 == rest.len()));
        return Err(if ok && data.len() < INLINE_MAX { Verdict::NeedMore(0) } else { Verdict::NoMatch });
    };
    let line = rest.get(..lf).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if word_end + lf >= INLINE_MAX || !line.iter().all(|&b| line_byte(b)) || contains_http_version(line) {
        return Err(Verdict::NoMatch);
    }
    if !inline::arguments_fit(command, line) {
        return Err(Verdict::NoMatch);
    }
    Ok(command)
}

/// Printable text, tabs and UTF-8; no other control bytes.
fn line_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

fn contains_http_version(line: &[u8]) -> bool {
    line.windows(6).any(|w| w.eq_ignore_ascii_case(b" HTTP/"))
}

refractium_plugin_sdk::export_detector!(Redis);

#[cfg(test)]
mod tests;
