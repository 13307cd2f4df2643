//! The plan of a batch, before any SQL: which deliveries are copies of another in the same
//! batch, which table each reading goes to, and in which rounds rows of the same key are
//! applied. Pure, so that its rules are plain unit tests.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::delivery::{Delivery, Outcome, Times};
use crate::event::{CallRecord, CallStatusRecord, Reading, Record, SmsRecord};

/// A reading bound for a table: its place in the batch, the record, and its delivery times.
#[derive(Debug)]
pub(super) struct Row<'a, R> {
    pub index: usize,
    pub record: &'a R,
    pub times: Times,
}

impl<R> Clone for Row<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Row<'_, R> {}

/// The key of a status event: `call_status` is unique on these three.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct StatusKey {
    pub call_sid: String,
    pub status: String,
    pub occurred_at: DateTime<Utc>,
}

impl StatusKey {
    pub fn of(s: &CallStatusRecord) -> StatusKey {
        StatusKey {
            call_sid: s.call_sid.clone(),
            status: s.status.clone(),
            occurred_at: s.occurred_at,
        }
    }
}

/// The readings of a batch, by table.
pub(super) struct BatchPlan<'a> {
    /// Decided here for the kinds without a table and for copies; placeholders (`Stored`)
    /// for the readings to write.
    pub outcomes: Vec<Outcome>,
    pub calls: Vec<Row<'a, CallRecord>>,
    pub sms: Vec<Row<'a, SmsRecord>>,
    pub statuses: Vec<Row<'a, CallStatusRecord>>,
}

impl<'a> BatchPlan<'a> {
    /// `None` stands for a delivery decided elsewhere (a copy of another in the batch); its
    /// outcome here is a placeholder.
    pub fn new(readings: impl Iterator<Item = Option<(&'a Reading, Times)>>) -> Self {
        let mut plan = BatchPlan {
            outcomes: Vec::new(),
            calls: Vec::new(),
            sms: Vec::new(),
            statuses: Vec::new(),
        };
        for (index, reading) in readings.enumerate() {
            let Some((reading, times)) = reading else {
                plan.outcomes.push(Outcome::Duplicate);
                continue;
            };
            // A record's outcome is decided when it is written.
            plan.outcomes.push(Outcome::of_new(reading));
            match reading {
                Reading::Record(Record::Call(record)) => plan.calls.push(Row {
                    index,
                    record,
                    times,
                }),
                Reading::Record(Record::Sms(record)) => plan.sms.push(Row {
                    index,
                    record,
                    times,
                }),
                Reading::Record(Record::CallStatus(record)) => plan.statuses.push(Row {
                    index,
                    record,
                    times,
                }),
                Reading::Test | Reading::Unknown | Reading::Rejected(_) => {}
            }
        }
        plan
    }

    /// The plan of a batch of deliveries as they arrived: a delivery whose bytes (and
    /// Content-Type, which decides how they read) came earlier in the same batch reads the
    /// same and changes nothing, so it is planned once; [`Copies::settle`] answers the later
    /// ones as what they are, duplicates.
    pub fn of_deliveries(batch: &'a [Delivery]) -> (BatchPlan<'a>, Copies) {
        let mut first_of: HashMap<([u8; 32], Option<&str>), usize> =
            HashMap::with_capacity(batch.len());
        let mut copies = Vec::new();
        let readings: Vec<Option<(&Reading, Times)>> = (batch.iter().enumerate())
            .map(|(i, d)| {
                let key = (d.decoded.sha256, d.content_type.as_deref());
                match first_of.entry(key) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        copies.push((i, *first.get()));
                        None
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                        Some((&d.decoded.reading, d.received))
                    }
                }
            })
            .collect();
        (BatchPlan::new(readings.into_iter()), Copies(copies))
    }

    /// Whether some key comes more than once.
    pub fn has_repeats(&self) -> bool {
        fn repeats<T, K: Eq + std::hash::Hash>(items: &[T], key: impl Fn(&T) -> K) -> bool {
            let mut seen = HashSet::with_capacity(items.len());
            !items.iter().all(|i| seen.insert(key(i)))
        }
        repeats(&self.calls, |r| r.record.call_sid.as_str())
            || repeats(&self.sms, |r| r.record.sms_key.as_str())
            || repeats(&self.statuses, |r| StatusKey::of(r.record))
    }

    /// Sorts each table's rows by key: the order in which every write path locks rows, so
    /// that concurrent batches cannot deadlock.
    pub fn sort_by_key(&mut self) {
        self.calls
            .sort_by(|a, b| a.record.call_sid.cmp(&b.record.call_sid));
        self.sms
            .sort_by(|a, b| a.record.sms_key.cmp(&b.record.sms_key));
        self.statuses.sort_by_key(|r| StatusKey::of(r.record));
    }
}

/// Deliveries of a batch that are copies of an earlier one: (copy, first).
pub(super) struct Copies(Vec<(usize, usize)>);

impl Copies {
    /// Each copy's outcome, from its first's: a duplicate when the first was written.
    pub fn settle(&self, outcomes: &mut [Outcome]) {
        for &(copy, first) in &self.0 {
            outcomes[copy] = match outcomes[first] {
                Outcome::Stored | Outcome::Updated | Outcome::Duplicate => Outcome::Duplicate,
                same => same,
            };
        }
    }
}

/// `Some(true)`: inserted; `Some(false)`: changed; `None`: the row was already so.
pub(super) fn outcome_of_change(changed: Option<bool>) -> Outcome {
    match changed {
        Some(true) => Outcome::Stored,
        Some(false) => Outcome::Updated,
        None => Outcome::Duplicate,
    }
}

/// Splits items into rounds in which each key appears once, keeping their order: a batch
/// statement may not touch one row twice, and later deliveries must be applied after
/// earlier ones. Each round is sorted by key (the lock order).
pub(super) fn rounds<'a, T: Clone, K: Ord + 'a>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<Vec<T>> {
    let mut rounds: Vec<BTreeMap<K, T>> = Vec::new();
    for item in items {
        let k = key(item);
        match rounds.iter_mut().find(|r| !r.contains_key(&k)) {
            Some(round) => {
                round.insert(k, item.clone());
            }
            None => rounds.push(BTreeMap::from([(k, item.clone())])),
        }
    }
    rounds
        .into_iter()
        .map(|r| r.into_values().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Source;

    fn delivery(body: &str, content_type: Option<&str>) -> Delivery {
        crate::payload::read_delivery(
            bytes::Bytes::from(body.to_owned()),
            content_type.map(str::to_owned),
            Utc::now(),
            Source::Webhook,
        )
    }

    #[test]
    fn copies_of_a_body_in_one_batch_are_planned_once_and_answered_as_duplicates() {
        let call = r#"{"activityType":"call","callSid":"CA1"}"#;
        let batch = [
            delivery(call, None),
            delivery(call, None),
            delivery(call, Some("application/x-www-form-urlencoded")),
            delivery(r#"{"unknown":1}"#, None),
            delivery(r#"{"unknown":1}"#, None),
        ];
        let (plan, copies) = BatchPlan::of_deliveries(&batch);
        assert_eq!(
            plan.calls.len(),
            2,
            "another Content-Type may read otherwise"
        );
        assert!(plan.has_repeats(), "CA1 twice: written in rounds");
        let mut outcomes = plan.outcomes.clone();
        outcomes[0] = Outcome::Stored;
        copies.settle(&mut outcomes);
        assert_eq!(outcomes[1], Outcome::Duplicate);
        assert_eq!(
            outcomes[4],
            Outcome::Archived,
            "an archived copy stays archived"
        );
    }

    #[test]
    fn rounds_keep_each_keys_order_and_sort_each_round_by_key() {
        let items = [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("b", 5), ("a", 6)];
        let r = rounds(&items, |(k, _)| *k);
        assert_eq!(
            r,
            vec![
                vec![("a", 2), ("b", 1), ("c", 4)],
                vec![("a", 6), ("b", 3)],
                vec![("b", 5)],
            ]
        );
    }

    #[test]
    fn status_keys_tell_apart_what_a_glued_string_could_not() {
        let t = Utc::now();
        let key = |sid: &str, status: &str| StatusKey {
            call_sid: sid.into(),
            status: status.into(),
            occurred_at: t,
        };
        assert_ne!(key("a\u{1f}b", "c"), key("a", "b\u{1f}c"));
    }
}
