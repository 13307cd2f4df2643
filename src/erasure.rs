//! Erased people and calls (`forget`, docs/reference.md §9): identifiers normalised and
//! digested, found in any text by the rules of the SQL helpers of migration V5
//! (`callhippo_holds_phone`, `_email`, `_token`), and the set of erasures every writer checks
//! events against before writing them.
//!
//! Only digests are kept, here and in `erasures`: the service never holds an erased
//! identifier, and so cannot log one.

use std::collections::HashSet;
use std::fmt;
use std::sync::RwLock;

use sha2::{Digest as _, Sha256};

use crate::delivery::Decoded;
use crate::event::{Reading, Record};

/// SHA-256 of a normalised identifier.
pub type Digest = [u8; 32];

/// The fewest and most digits a phone number has here (E.164 allows 15; fewer than 7 would
/// match too much else).
pub const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// What an identifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    Phone,
    Email,
    CallSid,
}

impl IdKind {
    pub fn parse(kind: &str) -> Option<IdKind> {
        [IdKind::Phone, IdKind::Email, IdKind::CallSid]
            .into_iter()
            .find(|k| k.as_str() == kind)
    }

    /// As `erasures.kind` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Phone => "phone",
            IdKind::Email => "email",
            IdKind::CallSid => "call_sid",
        }
    }
}

/// An identifier to erase, normalised: a phone number's digits, an e-mail address in lower
/// case, a callSid as sent. Its `Debug` and `Display` show only its kind: it is never logged.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    pub kind: IdKind,
    normalised: String,
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identifier({}, …)", self.kind.as_str())
    }
}

/// Characters a phone number may be written with, besides its digits.
pub(crate) fn is_phone_punctuation(c: char) -> bool {
    matches!(c, ' ' | '(' | ')' | '+' | '-' | '.' | '/')
}

impl Identifier {
    /// `+1 (555) 010-2030`, `+15550102030` and `15550102030` are one number.
    pub fn phone(given: &str) -> Result<Identifier, String> {
        if let Some(c) = given
            .chars()
            .find(|&c| !c.is_ascii_digit() && !is_phone_punctuation(c))
        {
            return Err(format!(
                "--phone: {c:?} is not part of a phone number (digits, spaces, brackets, +, -, . and / only)"
            ));
        }
        let digits: String = given.chars().filter(char::is_ascii_digit).collect();
        if !PHONE_DIGITS.contains(&digits.len()) {
            return Err(format!(
                "--phone: a phone number has {} to {} digits, this one {}",
                PHONE_DIGITS.start(),
                PHONE_DIGITS.end(),
                digits.len()
            ));
        }
        Ok(Identifier {
            kind: IdKind::Phone,
            normalised: digits,
        })
    }

    pub fn email(given: &str) -> Result<Identifier, String> {
        let email = given.trim().to_ascii_lowercase();
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && local.bytes().all(is_email_local)
                && domain.bytes().all(is_email_domain)
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
        if !valid {
            return Err("--email: not an e-mail address (name@domain)".into());
        }
        Ok(Identifier {
            kind: IdKind::Email,
            normalised: email,
        })
    }

    pub fn call_sid(given: &str) -> Result<Identifier, String> {
        let sid = given.trim();
        if sid.len() < MIN_SID_LEN || !sid.bytes().all(is_word) {
            return Err(format!(
                "--call-sid: a callSid has at least {MIN_SID_LEN} letters, digits, _ or -"
            ));
        }
        Ok(Identifier {
            kind: IdKind::CallSid,
            normalised: sid.to_owned(),
        })
    }

    /// The normalised identifier: for the SQL that finds it, never for a log.
    pub fn normalised(&self) -> &str {
        &self.normalised
    }

    pub fn digest(&self) -> Digest {
        digest(self.normalised.as_bytes())
    }

    /// What events are checked against: the kind, and the digest.
    pub fn key(&self) -> Key {
        (self.kind, self.digest())
    }
}

/// An identifier as erasures keep it: its kind and digest (a number's digits and a word of
/// the same digits are different identifiers).
pub type Key = (IdKind, Digest);

fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_email_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// The shortest word taken for a callSid.
const MIN_SID_LEN: usize = 6;

/// Pushes the digest of every identifier `text` may hold, by the rules of the SQL helpers:
/// phone numbers (runs of 5 to 15 digits once punctuation and its %-encodings are removed),
/// e-mail addresses (lower case, not inside a longer one), and words of letters, digits, `_`
/// and `-` (callSids).
pub fn digests_in(text: &str, out: &mut Vec<Key>) {
    phone_digests(text.as_bytes(), out);
    email_digests(text.as_bytes(), out);
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        if i - start >= MIN_SID_LEN {
            out.push((IdKind::CallSid, digest(&b[start..i])));
        }
        i += 1;
    }
}

fn phone_digests(b: &[u8], out: &mut Vec<Key>) {
    let mut digits = Vec::with_capacity(16);
    let mut flush = |digits: &mut Vec<u8>| {
        if PHONE_DIGITS.contains(&digits.len()) {
            out.push((IdKind::Phone, digest(digits)));
        }
        digits.clear();
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            digits.push(c);
        } else if is_phone_punctuation(c as char) {
        } else if c == b'%'
            && b.get(i + 1) == Some(&b'2')
            && b.get(i + 2).is_some_and(|h| b"089bdefBDEF".contains(h))
        {
            i += 2;
        } else {
            flush(&mut digits);
        }
        i += 1;
    }
    flush(&mut digits);
}

fn email_digests(b: &[u8], out: &mut Vec<Key>) {
    for (at, _) in b.iter().enumerate().filter(|(_, &c)| c == b'@') {
        let mut start = at;
        while start > 0 && is_email_local(b[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < b.len() && is_email_domain(b[end]) {
            end += 1;
        }
        while end > at + 1 && b[end - 1] == b'.' {
            end -= 1;
        }
        if start < at && end > at + 1 {
            out.push((IdKind::Email, digest(&b[start..end].to_ascii_lowercase())));
        }
    }
}

/// The digests of every identifier an event may hold: whatever its archived text holds, and
/// the callSid of its record.
pub fn digests_of(decoded: &Decoded) -> Vec<Key> {
    let mut out = Vec::new();
    for text in [&decoded.payload, &decoded.body].into_iter().flatten() {
        digests_in(text, &mut out);
    }
    if let Some(bytes) = &decoded.body_bytes {
        digests_in(&String::from_utf8_lossy(bytes), &mut out);
    }
    match &decoded.reading {
        Reading::Record(Record::Call(c)) => {
            out.push((IdKind::CallSid, digest(c.call_sid.trim().as_bytes())))
        }
        Reading::Record(Record::CallStatus(s)) => {
            out.push((IdKind::CallSid, digest(s.call_sid.trim().as_bytes())))
        }
        _ => {}
    }
    out
}

/// The erasures a writer knows: the highest `erasures.id` it read (`seen`) and the digests.
#[derive(Default)]
pub struct Erasures {
    known: RwLock<Option<Known>>,
}

struct Known {
    seen: i64,
    digests: HashSet<Key>,
}

impl Erasures {
    /// The highest `erasures.id` read; `None` until they have been read.
    pub fn seen(&self) -> Option<i64> {
        self.read(|k| k.map(|k| k.seen))
    }

    /// Takes what was read from `erasures`: its highest id, and every digest.
    pub fn replace(&self, seen: i64, digests: impl IntoIterator<Item = Key>) {
        let known = Known {
            seen,
            digests: digests.into_iter().collect(),
        };
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = Some(known);
    }

    /// Whether the event is about an erased identifier, as far as this writer knows.
    pub fn suppresses(&self, decoded: &Decoded) -> bool {
        self.read(|k| {
            let Some(k) = k.filter(|k| !k.digests.is_empty()) else {
                return false;
            };
            digests_of(decoded).iter().any(|d| k.digests.contains(d))
        })
    }

    fn read<T>(&self, f: impl FnOnce(Option<&Known>) -> T) -> T {
        f(self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(text: &str, id: &Identifier) -> bool {
        let mut out = Vec::new();
        digests_in(text, &mut out);
        out.contains(&id.key())
    }

    #[test]
    fn a_number_is_one_whatever_its_punctuation() {
        let forms = [
            "+1 (555) 010-2030",
            "+15550102030",
            "15550102030",
            "1.555.010.2030",
        ];
        let ids: Vec<Identifier> = forms
            .iter()
            .map(|f| Identifier::phone(f).unwrap())
            .collect();
        assert!(ids.iter().all(|id| id == &ids[0]));
        assert_eq!(ids[0].normalised(), "15550102030");
        for text in [
            r#"{"from": "+1 (555) 010-2030"}"#,
            r#"{"to":15550102030}"#,
            "from=%2B1+%28555%29+010-2030&to=%2B442071838750",
            "note: call back on +1 555-010-2030.",
        ] {
            assert!(holds(text, &ids[0]), "{text}");
        }
        for text in [
            r#"{"from": "+115550102030"}"#,
            r#"{"from": "+1 555 010 20301"}"#,
            r#"{"from": "5550102030"}"#,
        ] {
            assert!(!holds(text, &ids[0]), "{text}");
        }
    }

    #[test]
    fn bad_phone_numbers_and_addresses_are_named() {
        assert!(Identifier::phone("+1 555 CALL")
            .unwrap_err()
            .contains("'C'"));
        assert!(Identifier::phone("12")
            .unwrap_err()
            .contains("7 to 15 digits"));
        assert!(Identifier::phone("1234567890123456").is_err());
        for bad in ["ann", "@x.com", "ann@", "ann@x.com.", "a b@x.com"] {
            assert!(Identifier::email(bad).is_err(), "{bad}");
        }
        assert!(Identifier::call_sid("  ").is_err());
        assert!(Identifier::call_sid("CA1").is_err());
        assert!(Identifier::call_sid("CA.1234567").is_err());
    }

    #[test]
    fn an_address_is_found_in_any_case_but_not_inside_a_longer_one() {
        let id = Identifier::email(" Ann.Lee@Example.com ").unwrap();
        assert_eq!(id.normalised(), "ann.lee@example.com");
        assert!(holds(r#"{"email":"ANN.LEE@EXAMPLE.COM"}"#, &id));
        assert!(holds("write to ann.lee@example.com.", &id));
        assert!(!holds("joann.lee@example.com", &id));
        assert!(!holds("ann.lee@example.com.br", &id));
    }

    #[test]
    fn a_call_sid_is_found_as_a_whole_word_or_as_the_record_key() {
        let id = Identifier::call_sid("CA5fcabcd366fac3fe8c00c111f135e123").unwrap();
        assert!(holds(
            r#"{"callSid":"CA5fcabcd366fac3fe8c00c111f135e123"}"#,
            &id
        ));
        assert!(!holds(
            r#"{"callSid":"CA5fcabcd366fac3fe8c00c111f135e1234"}"#,
            &id
        ));
        let dashed = Identifier::call_sid("8956b12-345-678-02428").unwrap();
        assert!(holds(r#"{"callSid":"8956b12-345-678-02428"}"#, &dashed));
    }

    #[test]
    fn nothing_is_suppressed_until_erasures_are_known_and_then_only_what_they_name() {
        let erasures = Erasures::default();
        let decoded = crate::payload::decode(
            br#"{"callSid":"CA1","from":"+1 (555) 010-2030","to":"+442071838750"}"#,
            None,
        );
        assert!(!erasures.suppresses(&decoded));
        erasures.replace(1, [Identifier::phone("+44 20 7183 8750").unwrap().key()]);
        assert!(erasures.suppresses(&decoded));
        assert_eq!(erasures.seen(), Some(1));
        erasures.replace(2, [Identifier::phone("+44 20 7183 8751").unwrap().key()]);
        assert!(!erasures.suppresses(&decoded));
        // A phone number's digest is not a callSid's: a number written as digits alone is
        // a word of the same digest, taken for a callSid only when one is erased.
        let noted = crate::payload::decode(br#"{"callSid":"CA1","note":"see CA-erased-1"}"#, None);
        assert!(!erasures.suppresses(&noted));
        erasures.replace(3, [Identifier::call_sid("CA-erased-1").unwrap().key()]);
        assert!(erasures.suppresses(&noted));
        assert!(!erasures.suppresses(&decoded));
        erasures.replace(4, [Identifier::call_sid("15550102030").unwrap().key()]);
        assert!(
            !erasures.suppresses(&decoded),
            "a callSid of digits is not the number"
        );
        let id_debug = format!("{:?}", Identifier::phone("15550102030").unwrap());
        assert!(!id_debug.contains("555"), "{id_debug}");
    }
}
