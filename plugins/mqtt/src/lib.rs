//! Built-in `mqtt` detector: a client's CONNECT packet (MQTT 3.1, 3.1.1 and
//! 5.0): first byte 0x10, a minimally encoded remaining length (≤ 4 bytes,
//! [`MIN_REMAINING`]..=[`MAX_REMAINING`]), protocol name `MQTT` with level 4
//! or 5, or `MQIsdp` with level 3 (a bridge's 0x80 bit tolerated), connect
//! flags with the reserved bit clear and a consistent will (and, before 5,
//! no password without a user name), the keep-alive, for 5 the CONNECT
//! properties (known identifiers only, no repeats, well-formed values), then
//! the client identifier string (valid UTF-8 without U+0000).
//!
//! Attributes: `version` (`3.1`, `3.1.1`, `5`) and `client_id` (may be
//! empty; left out when it holds control characters). It waits for the bytes
//! up to the end of the client identifier, all within the remaining length;
//! when that end lies past [`WAIT`] bytes (huge properties or identifier) it
//! matches on the header alone, without `client_id`.

use refractium_plugin_sdk::bytes::{Error, Reader};
use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

/// Most bytes waited for.
pub const WAIT: usize = 4096;
/// Largest remaining length accepted for a CONNECT.
pub const MAX_REMAINING: usize = 256 * 1024;
/// Smallest CONNECT: 3.1.1 with an empty client id.
pub const MIN_REMAINING: usize = 12;

pub struct Mqtt;

impl Detector for Mqtt {
    const NAME: &'static str = "mqtt";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Mqtt)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        // The packet type, then a remaining length of at most 4 bytes.
        let mut cur = Reader::new(data, 1 + 4);
        match cur.u8() {
            Err(_) => return Verdict::NeedMore(2),
            Ok(0x10) => {}
            Ok(_) => return Verdict::NoMatch,
        }
        let remaining = match varint(&mut cur) {
            Ok(n) if (MIN_REMAINING..=MAX_REMAINING).contains(&n) => n,
            Ok(_) | Err(Error::Invalid) => return Verdict::NoMatch,
            Err(Error::Incomplete(need)) => return Verdict::NeedMore(need),
        };
        cur.set_end(cur.pos() + remaining);
        let mut header = None;
        match connect(&mut cur, &mut header) {
            Ok((version, client_id)) => {
                let detection = Detection::new("mqtt").attr("version", version);
                match client_id {
                    Some(id) => Verdict::Matched(detection.attr("client_id", id)),
                    None => Verdict::Matched(detection),
                }
            }
            Err(Error::Invalid) => Verdict::NoMatch,
            Err(Error::Incomplete(need)) if need <= WAIT => Verdict::NeedMore(need),
            Err(Error::Incomplete(_)) => match header {
                Some(version) => Verdict::Matched(Detection::new("mqtt").attr("version", version)),
                None => Verdict::NoMatch,
            },
        }
    }
}

/// The variable header and the client id: the version, and the id when it is
/// printable. `header` is set to the version once the fixed-size part (up to
/// the keep-alive) has been read and checked.
fn connect(cur: &mut Reader<'_>, header: &mut Option<&'static str>) -> Result<(&'static str, Option<String>), Error> {
    cur.expect(b"\x00")?;
    let name: &[u8] = match cur.u8()? {
        4 => b"MQTT",
        6 => b"MQIsdp",
        _ => return Err(Error::Invalid),
    };
    cur.expect(name)?;
    let version = match (name.len(), cur.u8()? & 0x7f) {
        (4, 4) => "3.1.1",
        (4, 5) => "5",
        (6, 3) => "3.1",
        _ => return Err(Error::Invalid),
    };
    let flags = cur.u8()?;
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password = flags & 0x40 != 0;
    let username = flags & 0x80 != 0;
    if flags & 0x01 != 0 || will_qos == 3 || (!will && (will_qos != 0 || will_retain)) {
        return Err(Error::Invalid);
    }
    if version != "5" && password && !username {
        return Err(Error::Invalid);
    }
    cur.take(2)?; // keep-alive
    *header = Some(version);
    if version == "5" {
        properties(cur)?;
    }
    let id_len = usize::from(cur.u16()?);
    let id = std::str::from_utf8(cur.take(id_len)?).map_err(|_| Error::Invalid)?;
    if id.contains('\0') {
        return Err(Error::Invalid);
    }
    let printable = !id.chars().any(char::is_control);
    Ok((version, printable.then(|| id.to_string())))
}

/// MQTT 5 CONNECT properties (§3.1.2.11).
fn properties(cur: &mut Reader<'_>) -> Result<(), Error> {
    let len = varint(cur)?;
    let end = cur.pos().checked_add(len).filter(|&end| end <= cur.end()).ok_or(Error::Invalid)?;
    let outer = cur.set_end(end);
    let mut seen: u64 = 0;
    while cur.pos() < end {
        let id = cur.u8()?;
        // Every identifier but user property (0x26) at most once.
        let bit = 1u64 << (id & 0x3f);
        if id > 0x3f || (id != 0x26 && seen & bit != 0) {
            return Err(Error::Invalid);
        }
        seen |= bit;
        match id {
            0x11 => {
                cur.take(4)?; // session expiry interval
            }
            0x21 | 0x22 => {
                // receive maximum (non-zero), topic alias maximum
                if cur.u16()? == 0 && id == 0x21 {
                    return Err(Error::Invalid);
                }
            }
            0x27 => {
                // maximum packet size, non-zero
                if cur.take(4)? == [0, 0, 0, 0] {
                    return Err(Error::Invalid);
                }
            }
            0x17 | 0x19 => {
                // request problem / response information: 0 or 1
                if cur.u8()? > 1 {
                    return Err(Error::Invalid);
                }
            }
            0x26 => {
                string(cur)?;
                string(cur)?;
            }
            0x15 => string(cur)?,
            0x16 => {
                let n = usize::from(cur.u16()?);
                cur.take(n)?;
            }
            _ => return Err(Error::Invalid),
        }
    }
    cur.set_end(outer);
    Ok(())
}

/// A UTF-8 string: 2-byte length, then valid UTF-8 without U+0000.
fn string(cur: &mut Reader<'_>) -> Result<(), Error> {
    let n = usize::from(cur.u16()?);
    match std::str::from_utf8(cur.take(n)?) {
        Ok(s) if !s.contains('\0') => Ok(()),
        _ => Err(Error::Invalid),
    }
}

/// A variable byte integer: at most 4 bytes, minimally encoded.
fn varint(cur: &mut Reader<'_>) -> Result<usize, Error> {
    let mut value = 0;
    for i in 0..4 {
        let byte = cur.u8()?;
        if i > 0 && byte == 0 {
            return Err(Error::Invalid);
        }
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::Invalid)
}

refractium_plugin_sdk::export_detector!(Mqtt);

#[cfg(test)]
mod tests;
