//! PostgreSQL's `jsonb` refuses two things JSON allows: the character U+0000 and numbers
//! beyond the range of `numeric`. Such a body must still be kept (the original text goes to
//! `raw_events.body`), so the payload is made storable here and the change is reported.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

#[derive(Debug, Default)]
pub struct Cleaned {
    /// Whether anything was changed.
    pub altered: bool,
    /// The top-level fields whose value was changed.
    pub altered_fields: BTreeSet<String>,
}

pub fn make_storable(value: &mut Value) -> Cleaned {
    let mut cleaned = Cleaned::default();
    match value {
        Value::Object(map) => {
            cleaned.altered = strip_nul_keys(map);
            for (k, v) in map.iter_mut() {
                if clean(v) {
                    cleaned.altered = true;
                    cleaned.altered_fields.insert(k.clone());
                }
            }
        }
        other => cleaned.altered = clean(other),
    }
    cleaned
}

/// Cleans one value in place; true when it changed. Serde's recursion limit (128) bounds the
/// depth of what reaches here.
fn clean(v: &mut Value) -> bool {
    match v {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "");
            true
        }
        Value::Number(n) if !fits_pg_numeric(&n.to_string()) => {
            *v = Value::String(n.to_string());
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |acc, i| clean(i) | acc),
        Value::Object(map) => {
            let changed = strip_nul_keys(map);
            map.values_mut().fold(changed, |acc, i| clean(i) | acc)
        }
        _ => false,
    }
}

fn strip_nul_keys(map: &mut Map<String, Value>) -> bool {
    if !map.keys().any(|k| k.contains('\0')) {
        return false;
    }
    *map = std::mem::take(map)
        .into_iter()
        .map(|(k, v)| (k.replace('\0', ""), v))
        .collect();
    true
}

/// PostgreSQL's `numeric` holds up to 131072 digits before the point and 16383 after.
/// Margins are kept wide; such numbers are never meaningful in a webhook anyway.
fn fits_pg_numeric(n: &str) -> bool {
    let n = n.trim_start_matches('-');
    let (mantissa, exp) = match n.find(['e', 'E']) {
        Some(i) => match n[i + 1..].parse::<i64>() {
            Ok(e) => (&n[..i], e),
            Err(_) => return false,
        },
        None => (n, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int_digits = int.trim_start_matches('0').len() as i64 + exp;
    let frac_digits = frac.len() as i64 - exp;
    int_digits <= 100_000 && frac_digits <= 16_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_removed_and_reported() {
        let mut v: Value =
            serde_json::from_str(r#"{"note":"a\u0000b","x\u0000":1,"tags":["\u0000t"]}"#).unwrap();
        let c = make_storable(&mut v);
        assert!(c.altered);
        assert_eq!(v, json!({"note": "ab", "x": 1, "tags": ["t"]}));
        assert_eq!(
            c.altered_fields.into_iter().collect::<Vec<_>>(),
            vec!["note".to_owned(), "tags".to_owned()]
        );
    }

    #[test]
    fn numbers_beyond_numeric_become_strings() {
        let mut v: Value =
            serde_json::from_str(r#"{"a":1e999999,"b":2.5,"c":[1E-20000]}"#).unwrap();
        let c = make_storable(&mut v);
        assert!(c.altered);
        // serde_json writes the exponent with its sign.
        assert_eq!(v["a"], json!("1e+999999"));
        assert_eq!(v["b"].to_string(), "2.5");
        assert!(
            v["c"][0].as_str().unwrap().ends_with("-20000"),
            "{}",
            v["c"][0]
        );
    }

    #[test]
    fn ordinary_values_are_untouched() {
        let mut v = json!({"a": "x", "b": [1, 2.5, {"c": null}]});
        let before = v.clone();
        assert!(!make_storable(&mut v).altered);
        assert_eq!(v, before);
    }
}
