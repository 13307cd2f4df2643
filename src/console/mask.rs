//! What the console may show of personal data: a phone number's last four digits, an
//! e-mail address's domain, and nothing of SMS text or notes (they are never read). Every
//! free text it shows (keys, errors) goes through [`text`], and is cut to [`MAX_CHARS`].

use crate::erasure::PHONE_DIGITS;

/// The longest text the console shows of any one value.
pub const MAX_CHARS: usize = 120;

/// `+1 (555) 010-2030` → `…2030`; a value with fewer than four digits shows none.
pub fn number(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(|c| c.is_numeric()).collect();
    if digits.len() < 4 {
        return "…".to_owned();
    }
    let last: String = digits[digits.len() - 4..].iter().collect();
    format!("…{last}")
}

/// `Agent.One@Example.com` → `…@example.com`.
pub fn email(value: &str) -> String {
    match value.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => format!("…@{}", domain.to_lowercase()),
        _ => "…".to_owned(),
    }
}

/// A free text (an error, a key) with every phone number in it reduced to its last four
/// digits and every e-mail address to its domain, cut to [`MAX_CHARS`].
pub fn text(value: &str) -> String {
    cut(&emails_in(&numbers_in(value)))
}

/// At most [`MAX_CHARS`] characters, `…` marking a cut.
pub fn cut(value: &str) -> String {
    if value.chars().count() <= MAX_CHARS {
        return value.to_owned();
    }
    let mut out: String = value.chars().take(MAX_CHARS - 1).collect();
    out.push('…');
    out
}

/// What may stand between the digits of one number: anything but a letter, as long as it
/// is short (`+1 (555) 010-2030`, `555_010_2030`, `555–010·2030`, `555\t010\t2030`).
fn joins_digits(c: char) -> bool {
    !c.is_alphanumeric() && c != '@'
}

/// The longest run of joining characters inside one number.
const MAX_JOIN: usize = 3;

/// How many characters at the start of `chars` join two parts of a number (0: none): at
/// most [`MAX_JOIN`] joining characters, an escape such as `\t` (how a quoted value shows
/// a tab) counting as one.
fn join_length(chars: &[char]) -> usize {
    let (mut k, mut units) = (0, 0);
    while units < MAX_JOIN {
        match chars.get(k) {
            Some('\\') if chars.get(k + 1).is_some_and(|c| "tnr0".contains(*c)) => k += 2,
            Some(c) if joins_digits(*c) => k += 1,
            _ => break,
        }
        units += 1;
    }
    k
}

/// Runs of digits (any script's) and short joins holding at least as many digits as a
/// phone number can have become `…` and their last four digits; shorter runs stay.
fn numbers_in(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_numeric() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits, joined by at most MAX_JOIN non-letters at a time, ending on a digit.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < chars.len() {
            if chars[j].is_numeric() {
                digits += 1;
                j += 1;
                end = j;
                continue;
            }
            let gap = join_length(&chars[j..]);
            if gap == 0 || !chars.get(j + gap).is_some_and(|c| c.is_numeric()) {
                break;
            }
            j += gap;
        }
        let run: String = chars[start..end].iter().collect();
        if digits >= *PHONE_DIGITS.start() {
            // A leading `+` belongs to the number.
            if out.ends_with('+') {
                out.pop();
            }
            out.push_str(&number(&run));
        } else {
            out.push_str(&run);
        }
        i = end;
    }
    out
}

/// Whether `c` ends an e-mail address's local part or domain when read outwards from `@`.
fn bounds_address(c: char) -> bool {
    c.is_whitespace() || "\"`<>()[]{},;:/\\|=".contains(c)
}

/// Every `local@domain` becomes `…@domain`, whatever the local part is written with.
fn emails_in(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let local_start = match before.strip_suffix('"').and_then(|b| b.rfind('"')) {
            // A quoted local part: "john smith"@example.com.
            Some(open) => open,
            None => before
                .char_indices()
                .rev()
                .take_while(|&(_, c)| !bounds_address(c) && c != '@')
                .last()
                .map_or(at, |(i, _)| i),
        };
        let after = &rest[at + 1..];
        let has_domain = after.chars().next().is_some_and(|c| !bounds_address(c));
        if local_start < at && has_domain {
            out.push_str(&before[..local_start]);
            out.push('…');
        } else {
            out.push_str(before);
        }
        out.push('@');
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_shows_its_last_four_digits_only() {
        assert_eq!(number("+1 (555) 010-2030"), "…2030");
        assert_eq!(number("15550102030"), "…2030");
        assert_eq!(number("123"), "…");
        assert_eq!(number(""), "…");
    }

    #[test]
    fn an_address_shows_its_domain_only() {
        assert_eq!(email("Agent.One@Example.com"), "…@example.com");
        assert_eq!(email("nobody"), "…");
        assert_eq!(email("x@"), "…");
    }

    #[test]
    fn numbers_and_addresses_inside_a_text_are_masked() {
        assert_eq!(
            text("from: not a number: \"+1 (555) 010-2030\", call ana.b@example.com"),
            "from: not a number: \"…2030\", call …@example.com"
        );
        assert_eq!(text("15550102030 then 15550104455"), "…2030 then …4455");
        // Short figures stay: they are not numbers of a person.
        assert_eq!(
            text("callCharge: not a decimal number: \"12.50\" (1 of 3)"),
            "callCharge: not a decimal number: \"12.50\" (1 of 3)"
        );
        assert_eq!(text("callSid is missing"), "callSid is missing");
    }

    #[test]
    fn numbers_written_every_way_are_masked() {
        for written in [
            "+15550102468",
            "555\\t010\\t2468",
            "555\t010\t2468",
            "+1_555_010_2468",
            "555–010–2468",
            "555·010·2468",
            "+１ ５５５ ０１０ ２４６８",
            "(555) 010 - 2468",
        ] {
            let shown = text(&format!("call {written} now"));
            let digits: String = shown.chars().filter(|c| c.is_numeric()).collect();
            assert!(digits.chars().count() <= 4, "{written:?} → {shown:?}");
            assert!(shown.contains('…'), "{written:?} → {shown:?}");
        }
    }

    #[test]
    fn addresses_written_every_way_are_masked() {
        for (written, domain) in [
            ("josé@example.com", "example.com"),
            ("o'brien@example.com", "example.com"),
            ("a!b#c@example.com", "example.com"),
            ("\"quoted\"@example.com", "example.com"),
        ] {
            let shown = text(&format!("from <{written}>"));
            assert_eq!(shown, format!("from <…@{domain}>"), "{written:?}");
        }
        assert_eq!(text("@ alone, and x@ too"), "@ alone, and x@ too");
    }

    #[test]
    fn long_values_are_cut() {
        let shown = text(&"A".repeat(250_000));
        assert_eq!(shown.chars().count(), MAX_CHARS);
        assert!(shown.ends_with('…'));
    }
}
