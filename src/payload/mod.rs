//! The wire: a webhook body's bytes -> [`Decoded`] (what `raw_events` keeps) and a
//! [`Reading`](crate::event::Reading) (what the normalized tables get). Pure: no I/O, no clock, no SQL, so that
//! every rule is a plain unit test, and `replay` reads stored bodies exactly as live ones.

pub mod api;
pub mod fields;
mod reader;
mod record_fields;
mod sanitize;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::delivery::Decoded;
use crate::event::{Kind, Reading, Rejection};

pub use reader::{read_object, KNOWN_FIELDS};

/// `v` as JSON text, see [`print_in_jsonb_order`].
fn json_in_jsonb_order(v: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    print_in_jsonb_order(v, &mut out);
    String::from_utf8(out).expect("serde_json prints UTF-8")
}

/// Prints `v` as JSON with each object's keys in jsonb's own order: shorter keys first, then
/// bytewise. PostgreSQL sorts the keys of every object it reads into jsonb; keys already in
/// that order cost it one pass instead of a sort (figures in bench/HISTORY.md). The stored
/// jsonb is the same whatever the order of the text.
fn print_in_jsonb_order(v: &Value, out: &mut Vec<u8>) {
    const WRITE: &str = "writing JSON to a Vec cannot fail";
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(b.0)));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect(WRITE);
                out.push(b':');
                print_in_jsonb_order(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                print_in_jsonb_order(item, out);
            }
            out.push(b']');
        }
        leaf => serde_json::to_writer(&mut *out, leaf).expect(WRITE),
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads one webhook body. `content_type` only matters for a body that is not JSON: form
/// fields are then read as an object.
pub fn decode(bytes: &[u8], content_type: Option<&str>) -> Decoded {
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let unbommed = bytes.strip_prefix(BOM).unwrap_or(bytes);

    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|text| !text.contains('\0'));
    let body_bytes = text.is_none().then(|| bytes.to_vec());
    // Made only when it is kept.
    let body = || match text {
        Some(text) => text.to_owned(),
        None => body_text(bytes),
    };

    let parsed: Option<Value> = serde_json::from_slice(unbommed).ok();
    let (value, from_form) = match parsed {
        Some(v) => (Some(v), false),
        None if is_form(content_type) => (read_form(unbommed), true),
        None => (None, false),
    };

    let Some(mut value) = value else {
        let message = if is_form(content_type) {
            "the body is neither a JSON object nor form fields".to_owned()
        } else {
            not_json_message(unbommed)
        };
        return Decoded {
            sha256,
            payload: None,
            body: Some(body()),
            body_bytes,
            reading: Reading::Rejected(Rejection {
                kind: Kind::Invalid,
                field: None,
                message,
            }),
        };
    };

    let cleaned = sanitize::make_storable(&mut value);
    let keep_body = from_form || cleaned.altered;
    let reading = match &value {
        Value::Object(obj) => read_object(obj, &cleaned.altered_fields),
        other => Reading::Rejected(Rejection {
            kind: Kind::Invalid,
            field: None,
            message: format!(
                "the body is JSON but not an object: it is {}",
                describe(other)
            ),
        }),
    };
    Decoded {
        sha256,
        payload: Some(json_in_jsonb_order(&value)),
        body: keep_body.then(body),
        body_bytes,
        reading,
    }
}

/// A body as `raw_events.body` keeps it: the text, with each invalid byte sequence and each
/// NUL (which PostgreSQL's `text` cannot hold) as U+FFFD.
pub fn body_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{FFFD}")
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// The JSON parser's own explanation, which names the line and column.
fn not_json_message(bytes: &[u8]) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return "the body is empty: a JSON object was expected".to_owned();
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        Err(e) => format!("the body is not JSON: {e}"),
        Ok(_) => "the body is not JSON".to_owned(),
    }
}

/// Form fields as an object: a repeated field (or one named `x[]`) becomes an array.
/// Text without any `name=value` is not a form.
fn read_form(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    // A lone word is not form fields, however it was labelled.
    if !text.contains('=') || text.trim_start().starts_with(['{', '[']) {
        return None;
    }
    let mut obj = Map::new();
    for (k, v) in form_urlencoded::parse(text.trim().as_bytes()) {
        let (key, is_list) = match k.strip_suffix("[]") {
            Some(base) => (base.to_owned(), true),
            None => (k.into_owned(), false),
        };
        if key.is_empty() {
            return None;
        }
        let v = Value::String(v.into_owned());
        match obj.get_mut(&key) {
            Some(Value::Array(list)) => list.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None if is_list => {
                obj.insert(key, Value::Array(vec![v]));
            }
            None => {
                obj.insert(key, v);
            }
        }
    }
    (!obj.is_empty()).then_some(Value::Object(obj))
}

/// `an array`, `a string`… for messages.
pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;

/// Reads a body as received (live, from the spool or from `raw_events`) into a delivery to
/// write.
pub fn read_delivery(
    body: bytes::Bytes,
    content_type: Option<String>,
    received_at: chrono::DateTime<chrono::Utc>,
    source: crate::delivery::Source,
) -> crate::delivery::Delivery {
    crate::delivery::Delivery {
        decoded: decode(&body, content_type.as_deref()),
        body,
        content_type,
        received: crate::delivery::Times::at(received_at),
        source,
    }
}
