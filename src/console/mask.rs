//! What the console may show of personal data: a phone number's last four digits, an
//! e-mail address's domain, and nothing of SMS text or notes (they are never read).

use crate::erasure::{is_phone_punctuation, PHONE_DIGITS};

/// `+1 (555) 010-2030` → `…2030`; a value with fewer than four digits shows none.
pub fn number(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 4 {
        return "…".to_owned();
    }
    let last: String = digits[digits.len() - 4..].iter().collect();
    format!("…{last}")
}

/// `Agent.One@Example.com` → `…@example.com`.
pub fn email(value: &str) -> String {
    match value.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => format!("…@{}", domain.to_ascii_lowercase()),
        _ => "…".to_owned(),
    }
}

/// A free text (an error, a sync run's failure) with every phone number in it reduced to
/// its last four digits and every e-mail address to its domain.
pub fn text(value: &str) -> String {
    emails_in(&numbers_in(value))
}

/// Runs of digits and phone punctuation holding at least as many digits as a phone number
/// can have become `…` and their last four digits; shorter runs stay.
fn numbers_in(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < chars.len() {
        if !(chars[i].is_ascii_digit() || chars[i] == '+' && next_is_digit(&chars, i)) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits and punctuation, ending on a digit.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < chars.len() && (chars[j].is_ascii_digit() || is_phone_punctuation(chars[j])) {
            if chars[j].is_ascii_digit() {
                digits += 1;
                end = j + 1;
            }
            j += 1;
        }
        let run: String = chars[start..end].iter().collect();
        if digits >= *PHONE_DIGITS.start() {
            out.push_str(&number(&run));
        } else {
            out.push_str(&run);
        }
        i = end.max(start + 1);
    }
    out
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

fn emails_in(value: &str) -> String {
    let is_local = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let local_start = before
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_local(c))
            .last()
            .map_or(at, |(i, _)| i);
        if local_start < at {
            out.push_str(&before[..local_start]);
            out.push('…');
        } else {
            out.push_str(before);
        }
        out.push('@');
        rest = &rest[at + 1..];
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
        assert!(!text("ring +15550102030 now").contains("5550102030"));
    }
}
