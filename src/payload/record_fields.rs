//! Reading a JSON object field by field, leniently: a field that cannot be read becomes
//! `None` with a warning that names it, instead of failing the event. Shared by the webhook
//! reader and the reader of CallHippo's API records.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::describe;
use super::fields::{normalize_enum, parse_bool, parse_time, time_from_epoch};
use super::reader::MAX_INDEXED_BYTES;
use crate::event::{Kind, Rejection, Warnings};

/// Field access that records what could not be read instead of failing the event.
pub(super) struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub warnings: Warnings,
}

impl<'a> Fields<'a> {
    /// A field's value; an absent field, `null` and an empty (or blank) string are `None`.
    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        match self.obj.get(name)? {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            v => Some(v),
        }
    }

    pub(super) fn warn(&mut self, field: &str, message: String) {
        self.warnings.entry(field.to_owned()).or_insert(message);
    }

    /// A scalar as text: strings trimmed, numbers and booleans as written.
    pub(super) fn text(&mut self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        match scalar_text(v) {
            Some(s) => Some(s),
            None => {
                self.warn(name, format!("expected text, got {}", describe(v)));
                None
            }
        }
    }

    /// `name`, or `fallback` when `name` is absent.
    pub(super) fn text_or(&mut self, name: &str, fallback: &str) -> Option<String> {
        match self.get(name) {
            Some(_) => self.text(name),
            None => self.text(fallback),
        }
    }

    /// A field of an object field (`extraParams.agentId`), read as text; warnings name it
    /// with its path.
    pub(super) fn inner_text(&mut self, object: &str, name: &str) -> Option<String> {
        let inner = match self.get(object)? {
            Value::Object(inner) => inner,
            other => {
                self.warn(
                    object,
                    format!("expected an object, got {}", describe(other)),
                );
                return None;
            }
        };
        match inner.get(name)? {
            Value::Null => None,
            v => match scalar_text(v).filter(|s| !s.is_empty()) {
                Some(s) => Some(s),
                None if matches!(v, Value::String(_)) => None,
                None => {
                    self.warn(
                        &format!("{object}.{name}"),
                        format!("expected text, got {}", describe(v)),
                    );
                    None
                }
            },
        }
    }

    pub(super) fn email(&mut self, name: &str) -> Option<String> {
        self.text(name).map(|s| s.to_lowercase())
    }

    pub(super) fn enumerated(&mut self, name: &str) -> Option<String> {
        self.text(name)
            .map(|s| normalize_enum(&s))
            .filter(|s| !s.is_empty())
    }

    /// A value read from its text (a string, or a number as written) by `read`.
    pub(super) fn parsed<T>(
        &mut self,
        name: &str,
        read: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.get(name)?;
        let result = match v {
            Value::String(s) => read(s),
            Value::Number(n) => read(&n.to_string()),
            other => Err(format!(
                "expected a number or a string, got {}",
                describe(other)
            )),
        };
        result.map_err(|e| self.warn(name, e)).ok()
    }

    pub(super) fn time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        match self.get(name)? {
            Value::Number(_) => self.parsed(name, time_from_epoch),
            _ => self.parsed(name, parse_time),
        }
    }

    pub(super) fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => self.parsed(name, parse_bool),
        }
    }

    /// A list of names (tags, dispositions): an array of scalars, or one string of
    /// comma-separated names. Trimmed, empty ones dropped, order kept. `None` when nothing
    /// is left.
    pub(super) fn list(&mut self, name: &str, repeats: Repeats) -> Option<Vec<String>> {
        let v = self.get(name)?;
        let mut names: Vec<String> = Vec::new();
        // Repeats found in linear time: a list may hold tens of thousands of names.
        let mut seen = std::collections::HashSet::new();
        let mut push = |s: &str| {
            let s = s.trim();
            let repeated = repeats == Repeats::Drop && !seen.insert(s.to_owned());
            if !s.is_empty() && !repeated {
                names.push(s.to_owned());
            }
        };
        match v {
            Value::Array(items) => {
                let mut skipped = None;
                for item in items {
                    match item {
                        Value::Null => {}
                        Value::String(s) => push(s),
                        other => match scalar_text(other) {
                            Some(s) => push(&s),
                            None => skipped = Some(describe(other)),
                        },
                    }
                }
                if let Some(what) = skipped {
                    self.warn(name, format!("an item was {what}, not a name: skipped"));
                }
            }
            Value::String(s) => s.split(',').for_each(push),
            other => {
                self.warn(
                    name,
                    format!("expected a list of names, got {}", describe(other)),
                );
            }
        }
        (!names.is_empty()).then_some(names)
    }

    /// Tag names: repeats dropped (call_tags' key), names too long to index dropped with a
    /// warning.
    pub(super) fn tag_names(&mut self, field: &str) -> Vec<String> {
        let mut names = self.list(field, Repeats::Drop).unwrap_or_default();
        let before = names.len();
        names.retain(|n| n.len() <= MAX_INDEXED_BYTES);
        if names.len() < before {
            self.warn(
                field,
                format!("a name longer than {MAX_INDEXED_BYTES} bytes was dropped"),
            );
        }
        if names.len() > MAX_TAGS {
            self.warn(
                field,
                format!(
                    "{} names: the first {MAX_TAGS} kept, the rest dropped",
                    names.len()
                ),
            );
            names.truncate(MAX_TAGS);
        }
        names
    }

    /// A value for an indexed column: one too long to index is dropped with a warning.
    pub(super) fn indexed(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<String>,
        name: &str,
    ) -> Option<String> {
        let value = read(self)?;
        if value.len() > MAX_INDEXED_BYTES {
            self.warn(
                name,
                format!(
                    "longer than {MAX_INDEXED_BYTES} bytes ({}): not stored",
                    value.len()
                ),
            );
            return None;
        }
        Some(value)
    }

    /// A key field: its absence, emptiness or unreadability refuses the event.
    pub(super) fn key_text(&mut self, name: &str, kind: Kind) -> Result<String, Rejection> {
        let reject = |message: String| Rejection {
            kind,
            field: Some(name.to_owned()),
            message,
        };
        match self.obj.get(name) {
            None | Some(Value::Null) => Err(reject(format!("{name} is missing"))),
            Some(v) => match scalar_text(v) {
                Some(s) if s.is_empty() => Err(reject(format!("{name} is empty"))),
                Some(s) if s.len() > MAX_INDEXED_BYTES => Err(reject(format!(
                    "{name} is longer than {MAX_INDEXED_BYTES} bytes ({})",
                    s.len()
                ))),
                Some(s) => Ok(s),
                None => Err(reject(format!("{name} must be text, got {}", describe(v)))),
            },
        }
    }

    /// A key field with a newer spelling used when the older one is absent.
    pub(super) fn key_text_or(
        &mut self,
        name: &str,
        fallback: &str,
        kind: Kind,
    ) -> Result<String, Rejection> {
        match (self.get(name), self.get(fallback)) {
            (None, Some(_)) => self.key_text(fallback, kind),
            _ => self.key_text(name, kind),
        }
    }

    pub(super) fn key_time(&mut self, name: &str, kind: Kind) -> Result<DateTime<Utc>, Rejection> {
        let text = self.key_text(name, kind)?;
        let read = match self.obj.get(name) {
            Some(Value::Number(_)) => time_from_epoch(&text),
            _ => parse_time(&text),
        };
        read.map_err(|e| Rejection {
            kind,
            field: Some(name.to_owned()),
            message: format!("{name} is {e}"),
        })
    }
}

/// Strings trimmed; numbers exactly as written; booleans as `true`/`false`.
pub(super) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The most tags a call keeps: no real call has more, and each one is a row.
pub(super) const MAX_TAGS: usize = 100;

/// Whether a list keeps repeated names (dispositions) or drops them (tags).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Repeats {
    Keep,
    Drop,
}
