//! The one budget for opening a key store someone uploaded: how much key-derivation work
//! (PBKDF2 and PKCS#12-KDF iterations, scrypt's N·r·p) and how many entries the gateway
//! spends on one file, checked before any key is derived.
//!
//! why: a PKCS#12 file chooses its own cost. Without a budget, one upload with a billion
//! iterations (or ten thousand shrouded keys of a million each) pins a core for minutes;
//! two of them froze the API, ADS and the snapshot feed (issue 11, finding 6). Every path
//! that opens an uploaded key store goes through here: certificate uploads and updates,
//! Mutual Authentication credentials (key store and trust store), the reconciler reading
//! them back, and the P12 tester.
//!
//! The walk reads the file's structure without the password, then decrypts each encrypted
//! safe (with the same algorithms `p12-keystore` uses) to count the bags and key
//! derivations hidden inside; that decryption is charged to the budget too. Anything this
//! reader cannot make sense of where `p12-keystore` might is refused or charged the most a
//! part may cost, so a difference between the two readers can only refuse, never let work
//! through uncounted.

mod decrypt;
pub(crate) mod der;
pub(crate) mod layout;

#[cfg(test)]
mod tests;

use layout::{Layout, Protection};

/// The most key-derivation work, in iterations, spent on one key store: the MAC, every
/// encrypted part, and this module's own decryption of the encrypted safes, summed. Real
/// tools use 2,048 (OpenSSL) to 10,000 (Java) per part, a few parts per file; this is ~1 s
/// of one core.
pub const MAX_TOTAL_WORK: u64 = 2_000_000;

/// The most work one part may ask for; `p12-keystore` itself refuses more.
pub const MAX_PART_WORK: u64 = 1_000_000;

/// The most entries read from one key store: safe bags of a PKCS#12 file (keys,
/// certificates, secrets), entries and chain certificates of a JKS. A client identity needs
/// one key and its chain.
pub const MAX_ENTRIES: usize = 64;

/// Why a key store is not opened. `code()` is the refusal code the API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    #[error(
        "opening it takes {work} key-derivation iterations, more than the gateway spends on \
         one key store ({MAX_TOTAL_WORK} in all, {MAX_PART_WORK} per part); re-export it with \
         default settings"
    )]
    Work { work: u64 },
    #[error(
        "it holds {entries} entries, more than the {MAX_ENTRIES} the gateway reads; export one \
         key with its certificate chain"
    )]
    Entries { entries: usize },
    /// An encrypted part decrypts to something this reader cannot walk: its cost is unknown.
    #[error("an encrypted part of it cannot be read")]
    Unreadable,
}

impl OverBudget {
    /// The stable refusal code of a key store over the budget.
    pub const CODE: &'static str = "keystore_too_costly";
}

/// What opening a PKCS#12 file will cost, checked against the budget. `Ok` answers the
/// work counted (this module's own decryption included). A file whose structure cannot be
/// read at all answers [`OverBudget::Unreadable`]: nothing reads it, so nothing is spent.
pub fn pkcs12(bytes: &[u8], password: &str) -> Result<u64, OverBudget> {
    let layout = layout::read(bytes).map_err(|_| OverBudget::Unreadable)?;
    pkcs12_layout(&layout, password)
}

/// As [`pkcs12`], for a layout already read (the tester reports on it too).
pub(crate) fn pkcs12_layout(layout: &Layout<'_>, password: &str) -> Result<u64, OverBudget> {
    let mut spent = Spent::default();
    if let Some(mac) = &layout.mac {
        spent.part(mac.iterations)?;
    }
    for p in &layout.protections {
        spent.part(p.iterations)?;
    }
    spent.entries(layout.bags)?;
    for safe in &layout.encrypted {
        let Some(ciphertext) = safe.ciphertext else {
            continue;
        };
        let cost = layout::protection(safe.algorithm)
            .map(|p: Protection| p.iterations)
            .map_err(|_| OverBudget::Unreadable)?;
        // Decrypting it here costs as much again as when `p12-keystore` does.
        spent.part(cost)?;
        match decrypt::safe(safe.algorithm, ciphertext, password) {
            decrypt::Outcome::Plain(plain) => {
                let inside = layout::safe_contents(&plain).map_err(|_| OverBudget::Unreadable)?;
                spent.entries(inside.bags)?;
                for p in &inside.protections {
                    spent.part(p.iterations)?;
                }
            }
            // `p12-keystore` fails on this safe the same way (same algorithms, same
            // password) and stops there: nothing inside it or after it is derived.
            decrypt::Outcome::Refused => break,
            decrypt::Outcome::Unreadable => return Err(OverBudget::Unreadable),
        }
    }
    Ok(spent.work)
}

/// A JKS file's entries and chain certificates, against [`MAX_ENTRIES`]. JKS has no key
/// derivation to bound: its cost is a SHA-1 pass over bytes the upload limit bounds.
pub fn jks_entries(entries: usize) -> Result<(), OverBudget> {
    Spent::default().entries(entries)
}

/// Work and entries counted so far.
#[derive(Default)]
struct Spent {
    work: u64,
    entries: usize,
}

impl Spent {
    fn part(&mut self, work: u64) -> Result<(), OverBudget> {
        self.work = self.work.saturating_add(work);
        if work > MAX_PART_WORK || self.work > MAX_TOTAL_WORK {
            return Err(OverBudget::Work { work: self.work });
        }
        Ok(())
    }

    fn entries(&mut self, n: usize) -> Result<(), OverBudget> {
        self.entries = self.entries.saturating_add(n);
        if self.entries > MAX_ENTRIES {
            return Err(OverBudget::Entries {
                entries: self.entries,
            });
        }
        Ok(())
    }
}
