//! A minimal, panic-free DER reader: the PFX envelope, PKCS#8 and SPKI need only a few
//! tags, and owning the walk keeps hostile input away from code that might panic.
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const OID: u8 = 0x06;
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const CONTEXT_0: u8 = 0xA0;
pub(crate) const CONTEXT_0_PRIMITIVE: u8 = 0x80;
pub(crate) const CONTEXT_1: u8 = 0xA1;
pub(crate) const CONTEXT_1_PRIMITIVE: u8 = 0x81;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    Malformed,
    /// Valid BER the DER-only reader refuses: indefinite length or constructed string.
    Ber,
}

#[derive(Clone)]
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element's tag and contents.
    pub fn any(&mut self) -> Result<(u8, &'a [u8]), Error> {
        let (&tag, rest) = self.0.split_first().ok_or(Error::Malformed)?;
        if tag & 0x1f == 0x1f {
            return Err(Error::Malformed);
        }
        if matches!(tag, 0x23 | 0x24) {
            return Err(Error::Ber);
        }
        let (&first, mut rest) = rest.split_first().ok_or(Error::Malformed)?;
        let len = match first {
            0..=0x7f => usize::from(first),
            0x80 => return Err(Error::Ber),
            _ => {
                let n = usize::from(first & 0x7f);
                if n > 4 {
                    return Err(Error::Malformed);
                }
                let (len_bytes, after) = rest.split_at_checked(n).ok_or(Error::Malformed)?;
                rest = after;
                if len_bytes.first() == Some(&0) {
                    return Err(Error::Malformed);
                }
                let len = len_bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                if len < 0x80 {
                    return Err(Error::Malformed);
                }
                len
            }
        };
        let (value, rest) = rest.split_at_checked(len).ok_or(Error::Malformed)?;
        self.0 = rest;
        Ok((tag, value))
    }

    /// The next element whole (tag, length and contents), for decoders that want it so.
    pub fn element(&mut self) -> Result<&'a [u8], Error> {
        let before = self.0;
        self.any()?;
        let used = before.len().saturating_sub(self.0.len());
        before.get(..used).ok_or(Error::Malformed)
    }

    pub fn take(&mut self, tag: u8) -> Result<&'a [u8], Error> {
        match self.any()? {
            (t, value) if t == tag => Ok(value),
            _ => Err(Error::Malformed),
        }
    }

    pub fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, Error> {
        if self.0.first() == Some(&tag) {
            self.take(tag).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Dotted form of an OBJECT IDENTIFIER's contents.
pub(crate) fn oid(bytes: &[u8]) -> Result<String, Error> {
    let mut out = String::new();
    let mut arc: u64 = 0;
    let mut first = true;
    if bytes.is_empty() || bytes.last().is_some_and(|b| b & 0x80 != 0) {
        return Err(Error::Malformed);
    }
    for &b in bytes {
        arc = arc
            .checked_mul(128)
            .and_then(|a| a.checked_add(u64::from(b & 0x7f)))
            .ok_or(Error::Malformed)?;
        if b & 0x80 != 0 {
            continue;
        }
        if first {
            let (a, b) = match arc {
                0..=39 => (0, arc),
                40..=79 => (1, arc - 40),
                _ => (2, arc - 80),
            };
            let _ = write!(out, "{a}.{b}");
            first = false;
        } else {
            let _ = write!(out, ".{arc}");
        }
        arc = 0;
    }
    Ok(out)
}

use std::fmt::Write as _;

/// A non-negative INTEGER's magnitude without leading zeros; `None` if negative.
pub(crate) fn unsigned(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    Some(strip_zeros(bytes))
}

pub(crate) fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.get(zeros..).unwrap_or_default()
}

/// A small non-negative INTEGER; saturates at `u64::MAX` so huge counts stay huge.
pub(crate) fn uint(bytes: &[u8]) -> Result<u64, Error> {
    let magnitude = unsigned(bytes).ok_or(Error::Malformed)?;
    if magnitude.len() > 8 {
        return Ok(u64::MAX);
    }
    Ok(magnitude
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Bit length of an unsigned big-endian magnitude.
pub(crate) fn bits(magnitude: &[u8]) -> u32 {
    let magnitude = strip_zeros(magnitude);
    match magnitude.first() {
        None => 0,
        Some(&b) => {
            let len = u32::try_from(magnitude.len()).unwrap_or(u32::MAX / 8);
            len.saturating_mul(8) - b.leading_zeros()
        }
    }
}

/// A BIT STRING's bytes, when it has no unused bits (as keys always do).
pub(crate) fn bit_string(bytes: &[u8]) -> Option<&[u8]> {
    match bytes.split_first() {
        Some((0, rest)) => Some(rest),
        _ => None,
    }
}
