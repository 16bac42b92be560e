//! A strict reader for a DNS message a client sends (RFC 1035 §4.1, RFC 2136
//! UPDATE, RFC 1996 NOTIFY, RFC 6891 EDNS, RFC 8945 TSIG, RFC 2931 SIG(0)).
//! It checks the header, the question and every record the counts announce,
//! and that nothing follows them. It reads a message that may not have
//! arrived whole (DNS over TCP): running past the bytes at hand is
//! [`Error::Incomplete`], running past the message's end is
//! [`Error::Invalid`].

/// Opcodes a client sends first.
pub const QUERY: u8 = 0;
pub const STATUS: u8 = 2;
pub const NOTIFY: u8 = 4;
pub const UPDATE: u8 = 5;

const TYPE_SOA: u16 = 6;
const TYPE_SIG: u16 = 24;
const TYPE_OPT: u16 = 41;
const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;
/// Classes a question (or zone section) may ask: IN, CH, HS, ANY.
const QCLASSES: &[u16] = &[1, 3, 4, CLASS_ANY];
/// Classes of records: those plus NONE (254, UPDATE deletions).
const RR_CLASSES: &[u16] = &[1, 3, 4, 254, CLASS_ANY];
/// Most answer/authority records accepted (UPDATE prerequisites/updates).
const MAX_RECORDS: u16 = 256;
/// Most additional records: an EDNS OPT and a TSIG or SIG(0).
const MAX_ADDITIONAL: u16 = 2;
/// Longest name on the wire, length octets and root label included.
const MAX_NAME: usize = 255;

/// Why a message could not be read: more bytes needed, or not a valid
/// client message.
pub use refractium_plugin_sdk::bytes::Error;
use refractium_plugin_sdk::bytes::Reader;

/// The header fields that matter once they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub opcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

/// The (first and only) question, or the zone of an UPDATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Wire-format labels, without the root label.
    pub labels: Vec<Vec<u8>>,
    pub qtype: u16,
    pub qclass: u16,
}

/// What was read, and how reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub header: Option<Header>,
    /// Set once the question section has been read (`None` inside when the
    /// message has no question).
    pub question: Option<Option<Question>>,
    pub result: Result<(), Error>,
}

/// Read `buf`, the first bytes of a message that is `end` bytes long
/// (`buf.len() <= end`).
pub fn parse(buf: &[u8], end: usize) -> Parsed {
    let mut parsed = Parsed { header: None, question: None, result: Ok(()) };
    let mut cur = Reader::new(buf, end);
    parsed.result = read(&mut cur, &mut parsed);
    parsed
}

fn read(cur: &mut Reader<'_>, parsed: &mut Parsed) -> Result<(), Error> {
    let header = header(cur)?;
    parsed.header = Some(header);
    let question = match header.qdcount {
        0 => None,
        _ => Some(question(cur, header.opcode)?),
    };
    parsed.question = Some(question);
    for _ in 0..u32::from(header.ancount) + u32::from(header.nscount) {
        let rr = record(cur)?;
        if rr.rtype == TYPE_OPT || rr.rtype == TYPE_TSIG {
            return Err(Error::Invalid);
        }
    }
    let mut opt_seen = false;
    for index in 0..header.arcount {
        let rr = record(cur)?;
        let last = index + 1 == header.arcount;
        match rr.rtype {
            TYPE_OPT if !opt_seen && rr.root_name && edns_ok(&rr) => opt_seen = true,
            TYPE_TSIG | TYPE_SIG if last && rr.class == CLASS_ANY && rr.ttl == 0 => {}
            TYPE_OPT | TYPE_TSIG => return Err(Error::Invalid),
            // Queries carry nothing else; UPDATE and NOTIFY may add data.
            _ if header.opcode == QUERY || header.opcode == STATUS => return Err(Error::Invalid),
            _ => {}
        }
    }
    if cur.is_at_end() { Ok(()) } else { Err(Error::Invalid) }
}

/// The 12-byte header, checked field by field as the bytes arrive.
fn header(cur: &mut Reader<'_>) -> Result<Header, Error> {
    cur.take(2)?; // ID: anything
    let flags = cur.u8()?;
    let opcode = (flags >> 3) & 0x0f;
    let aa = flags & 0x04 != 0;
    let tc = flags & 0x02 != 0;
    // QR = 0 (a query), a known opcode, not truncated, AA only on NOTIFY.
    if flags & 0x80 != 0 || ![QUERY, STATUS, NOTIFY, UPDATE].contains(&opcode) || tc || (aa && opcode != NOTIFY) {
        return Err(Error::Invalid);
    }
    // RA, AD and CD are tolerated; Z must be 0 and RCODE NOERROR.
    let flags2 = cur.u8()?;
    if flags2 & 0x40 != 0 || flags2 & 0x0f != 0 {
        return Err(Error::Invalid);
    }
    let qdcount = cur.u16()?;
    if qdcount > 1 || (qdcount == 0 && opcode != STATUS) {
        return Err(Error::Invalid);
    }
    let ancount = cur.u16()?;
    if ancount > MAX_RECORDS || (ancount > 0 && opcode != NOTIFY && opcode != UPDATE) {
        return Err(Error::Invalid);
    }
    let nscount = cur.u16()?;
    if nscount > MAX_RECORDS || (nscount > 0 && opcode != UPDATE) {
        return Err(Error::Invalid);
    }
    let arcount = cur.u16()?;
    if arcount > MAX_ADDITIONAL {
        return Err(Error::Invalid);
    }
    Ok(Header { opcode, qdcount, ancount, nscount, arcount })
}

/// The question: a name without compression, QTYPE, QCLASS.
fn question(cur: &mut Reader<'_>, opcode: u8) -> Result<Question, Error> {
    let mut labels = Vec::new();
    let mut wire = 1; // the root label
    loop {
        let len = usize::from(cur.u8()?);
        if len == 0 {
            break;
        }
        // Pointers (0xc0) and extended label types are not in a first name.
        if len > 63 {
            return Err(Error::Invalid);
        }
        wire += 1 + len;
        if wire > MAX_NAME {
            return Err(Error::Invalid);
        }
        labels.push(cur.take(len)?.to_vec());
    }
    let qtype = cur.u16()?;
    let qclass = cur.u16()?;
    // QTYPE 0 is reserved; the zone section of an UPDATE names an SOA.
    if qtype == 0 || !QCLASSES.contains(&qclass) || (opcode == UPDATE && qtype != TYPE_SOA) {
        return Err(Error::Invalid);
    }
    Ok(Question { labels, qtype, qclass })
}

/// A resource record, as much as the checks need.
struct Record<'a> {
    root_name: bool,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: &'a [u8],
}

fn record<'a>(cur: &mut Reader<'a>) -> Result<Record<'a>, Error> {
    let start = cur.pos();
    name(cur)?;
    let root_name = cur.pos() == start + 1;
    let rtype = cur.u16()?;
    let class = cur.u16()?;
    if rtype == 0 || (rtype != TYPE_OPT && !RR_CLASSES.contains(&class)) {
        return Err(Error::Invalid);
    }
    let ttl = cur.u32()?;
    let rdlength = usize::from(cur.u16()?);
    let rdata = cur.take(rdlength)?;
    Ok(Record { root_name, rtype, class, ttl, rdata })
}

/// A name that may use compression pointers to earlier bytes. After a
/// jump, labels are read below the pointer that led there, and the next
/// pointer must point below itself: each jump lowers that limit, so reading
/// ends.
fn name(cur: &mut Reader<'_>) -> Result<(), Error> {
    let mut wire = 1;
    // After the first pointer: where the next label is, and the bound below
    // which it must lie.
    let mut jump: Option<(usize, usize)> = None;
    loop {
        let byte = match jump {
            None => cur.u8()?,
            Some((at, limit)) => *cur.data().get(at).filter(|_| at < limit).ok_or(Error::Invalid)?,
        };
        let len = usize::from(byte);
        match byte {
            0 => return Ok(()),
            1..=63 => {
                wire += 1 + len;
                if wire > MAX_NAME {
                    return Err(Error::Invalid);
                }
                match jump {
                    None => {
                        cur.take(len)?;
                    }
                    Some((at, limit)) => jump = Some((at + 1 + len, limit)),
                }
            }
            0xc0..=0xff => {
                let (low, here) = match jump {
                    None => (cur.u8()?, cur.pos() - 2),
                    Some((at, limit)) if at + 2 <= limit => (*cur.data().get(at + 1).ok_or(Error::Invalid)?, at),
                    Some(_) => return Err(Error::Invalid),
                };
                let target = (usize::from(byte & 0x3f) << 8) | usize::from(low);
                // Backwards only, and never into the header.
                if target < 12 || target >= here {
                    return Err(Error::Invalid);
                }
                jump = Some((target, here));
            }
            _ => return Err(Error::Invalid),
        }
    }
}

/// An EDNS(0) OPT record: extended RCODE 0, version 0, well-formed options.
fn edns_ok(rr: &Record<'_>) -> bool {
    let [ext_rcode, version, _, _] = rr.ttl.to_be_bytes();
    if ext_rcode != 0 || version != 0 {
        return false;
    }
    let mut rest = rr.rdata;
    while !rest.is_empty() {
        let Some(&[_, _, hi, lo]) = rest.get(..4) else { return false };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        match rest.get(4 + len..) {
            Some(next) => rest = next,
            None => return false,
        }
    }
    true
}
