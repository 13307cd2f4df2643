//! Hostile input against the payload reader: whatever the bytes, it answers and never
//! panics, and what it hands to PostgreSQL is storable.

use callhippo_ingest::event::{Kind, Reading};
use callhippo_ingest::payload::{decode, KNOWN_FIELDS};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Every field the reader looks at, so that wrong types reach each of them.
const FIELDS: &[&str] = KNOWN_FIELDS;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
        "[0-9:.+\\-eEZT ]{0,30}".prop_map(Value::String),
        Just(json!("\u{0}")),
        Just(json!("+11111111111")),
        Just(json!("call")),
        Just(json!("sms")),
        Just(json!("2025-06-23T13:13:50.000Z")),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(FIELDS), value()), 0..20)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// What goes to `jsonb` must hold no NUL character.
fn assert_storable(v: &Value) {
    match v {
        Value::String(s) => assert!(!s.contains('\0')),
        Value::Array(a) => a.iter().for_each(assert_storable),
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            assert!(!k.contains('\0'));
            assert_storable(v);
        }),
        _ => {}
    }
}

fn check(bytes: &[u8], content_type: Option<&str>) {
    let d = decode(bytes, content_type);
    if let Some(p) = &d.payload {
        assert_storable(&serde_json::from_str(p).expect("the payload text is JSON"));
    }
    if let Some(b) = &d.body {
        assert!(!b.contains('\0'), "text cannot hold NUL");
    }
    if let Reading::Rejected(r) = &d.reading {
        assert!(!r.message.is_empty());
        assert!(
            r.message.len() < 2_000,
            "messages stay short: {}",
            r.message.len()
        );
    }
    // The reading is a function of the bytes.
    assert_eq!(decode(bytes, content_type).reading, d.reading);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes, None);
        check(&bytes, Some("application/x-www-form-urlencoded"));
    }

    #[test]
    fn wrong_types_for_every_field(obj in payload()) {
        let text = Value::Object(obj).to_string();
        check(text.as_bytes(), Some("application/json"));
    }

    #[test]
    fn known_kinds_with_wrong_types(obj in payload(), kind in prop::sample::select(&["call", "sms", "Call", " SMS "][..]), sid in scalar()) {
        let mut obj = obj;
        obj.insert("activityType".into(), json!(kind));
        obj.insert("callSid".into(), sid);
        let text = Value::Object(obj).to_string();
        check(text.as_bytes(), None);
    }

    #[test]
    fn form_bodies(pairs in prop::collection::vec((prop::sample::select(FIELDS), "\\PC{0,20}"), 0..12)) {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        check(body.as_bytes(), Some("application/x-www-form-urlencoded"));
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    for depth in [127, 128, 129, 10_000, 200_000] {
        let body = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        check(body.as_bytes(), None);
        let body = format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        check(body.as_bytes(), None);
    }
}

#[test]
fn huge_numbers_and_duplicate_keys() {
    for body in [
        r#"{"activityType":"call","callSid":"x","billedMinutes":1e400,"callCharge":-1e-400,"duration":99999999999999999999999}"#,
        r#"{"activityType":"call","callSid":"a","callSid":"b"}"#,
        r#"{"activityType":"call","callSid":"x","dialCode":1e999999999999}"#,
    ] {
        check(body.as_bytes(), None);
    }
    // Duplicate keys: the last one wins, as in PostgreSQL's jsonb.
    let d = decode(
        br#"{"activityType":"call","callSid":"a","callSid":"b"}"#,
        None,
    );
    assert_eq!(d.kind(), Kind::Call);
    let payload: serde_json::Value = serde_json::from_str(&d.payload.unwrap()).unwrap();
    assert_eq!(payload["callSid"], "b");
}

#[test]
fn nul_everywhere() {
    let body = r#"{"activityType":"call\u0000","call\u0000Sid":"x","callSid":"\u0000","note":"\u0000\u0000"}"#;
    check(body.as_bytes(), None);
    check(b"\x00\x00\x00", None);
    check(b"{\"a\":1}\x00", None);
}
