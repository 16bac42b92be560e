//! A checked big-endian reader for a message that may not have arrived whole.
//!
//! A detector sees the first bytes of a connection, often fewer than the
//! message it is reading. [`Reader`] reads fields in order from `data`, the
//! bytes at hand, of a message known (or bounded) to end at `end`: running
//! past `end` is [`Error::Invalid`] (the message cannot hold the field),
//! running past the bytes at hand is [`Error::Incomplete`] with how many
//! bytes of `data` are needed in total, ready for [`Verdict::NeedMore`].
//! Nothing panics: no indexing, and offsets use checked arithmetic.
//!
//! [`Verdict::NeedMore`]: crate::Verdict::NeedMore
//!
//! ```
//! use refractium_plugin_sdk::bytes::{Error, Reader};
//!
//! // A 2-byte length, then that many bytes: only 3 of 5 have arrived.
//! let mut r = Reader::new(b"\x00\x03a", 5);
//! let len = usize::from(r.u16().unwrap());
//! assert_eq!(r.take(len), Err(Error::Incomplete(5)));
//! // A field longer than the message is invalid at once.
//! let mut r = Reader::new(b"\x00\x09a", 5);
//! r.u16().unwrap();
//! assert_eq!(r.take(9), Err(Error::Invalid));
//! ```

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// More bytes are needed: the first this many of `data`, in total.
    Incomplete(usize),
    /// The field runs past the message's end, or its value is not valid.
    Invalid,
}

/// Reads fields in order from `data`, the first bytes of a message that ends
/// at offset `end`.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`, for a message ending at offset `end`
    /// (`usize::MAX` when only the bytes at hand bound it).
    pub fn new(data: &'a [u8], end: usize) -> Self {
        Reader { data, pos: 0, end }
    }

    /// All the bytes at hand, from offset 0.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Offset of the next byte to read.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Offset where the message ends.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Move the message's end (to read a nested structure with its own
    /// length, then restore the outer end); returns the previous end.
    pub fn set_end(&mut self, end: usize) -> usize {
        std::mem::replace(&mut self.end, end)
    }

    /// Bytes left before the message's end (arrived or not).
    pub fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// True when the whole message has been read.
    pub fn is_at_end(&self) -> bool {
        self.pos == self.end
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let stop = self.pos.checked_add(n).filter(|&stop| stop <= self.end).ok_or(Error::Invalid)?;
        let bytes = self.data.get(self.pos..stop).ok_or(Error::Incomplete(stop))?;
        self.pos = stop;
        Ok(bytes)
    }

    /// Skip `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), Error> {
        self.take(n).map(|_| ())
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take(N)?.try_into().map_err(|_| Error::Invalid)
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        let [a] = self.array()?;
        Ok(a)
    }

    pub fn u16(&mut self) -> Result<u16, Error> {
        self.array().map(u16::from_be_bytes)
    }

    pub fn u24(&mut self) -> Result<u32, Error> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub fn u32(&mut self) -> Result<u32, Error> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, Error> {
        self.array().map(u64::from_be_bytes)
    }

    /// Exactly `bytes`; a mismatch in the part that has arrived is refused
    /// at once, before the rest arrives.
    pub fn expect(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let have = self.data.get(self.pos..).unwrap_or_default();
        let seen = have.len().min(bytes.len());
        if have.get(..seen) != bytes.get(..seen) {
            return Err(Error::Invalid);
        }
        if self.take(bytes.len())? == bytes { Ok(()) } else { Err(Error::Invalid) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let data = b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12";
        let mut r = Reader::new(data, data.len());
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u24(), Ok(0x04_0506));
        assert_eq!(r.u32(), Ok(0x0708_090a));
        assert_eq!(r.u64(), Ok(0x0b0c_0d0e_0f10_1112));
        assert!(r.is_at_end());
        assert_eq!(r.u8(), Err(Error::Invalid));
    }

    #[test]
    fn incomplete_says_how_many_in_total() {
        let mut r = Reader::new(b"\x01\x02\x03", 10);
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u32(), Err(Error::Incomplete(6)));
        // A failed read consumes nothing.
        assert_eq!(r.pos(), 2);
        assert_eq!(r.remaining(), 8);
        assert_eq!(r.take(usize::MAX), Err(Error::Invalid));
        assert_eq!(r.take(8), Err(Error::Incomplete(10)));
        assert_eq!(r.take(9), Err(Error::Invalid));
    }

    #[test]
    fn nested_ends() {
        let mut r = Reader::new(b"\x02abc", usize::MAX);
        let len = usize::from(r.u8().unwrap_or_default());
        let outer = r.set_end(r.pos() + len);
        assert_eq!(r.take(2), Ok(&b"ab"[..]));
        assert!(r.is_at_end());
        assert_eq!(r.u8(), Err(Error::Invalid));
        r.set_end(outer);
        assert_eq!(r.u8(), Ok(b'c'));
        assert_eq!(r.u8(), Err(Error::Incomplete(5)));
        assert_eq!(r.data(), b"\x02abc");
    }

    #[test]
    fn expect_refuses_early() {
        let mut r = Reader::new(b"MQ", 10);
        assert_eq!(r.clone().expect(b"MQTT"), Err(Error::Incomplete(4)));
        assert_eq!(r.clone().expect(b"MX"), Err(Error::Invalid));
        assert_eq!(r.expect(b"MQ"), Ok(()));
        assert_eq!(r.skip(1), Err(Error::Incomplete(3)));
    }
}
