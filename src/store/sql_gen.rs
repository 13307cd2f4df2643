//! Where the statements in `sql/` come from: each is made from its table's column list
//! (the same list the store binds values from), and a test checks that the files say exactly
//! that. After a change to a column list, `UPDATE_SQL=1 cargo test --lib sql_files` writes
//! them again. Only column names and parameter numbers go into the text.

use super::batch::batch_call_columns;
use super::columns::{Column, Columns};
use super::tables::calls::api_call_columns;
use super::tables::raw_events::raw_columns;
use super::tables::{record_columns, RecordTable};
use crate::event::{CallRecord, CallStatusRecord, SmsRecord};

/// `SELECT <columns> FROM (SELECT unnest($first::<type>[]) AS <name>, …) AS x`: the rows of
/// `cols`, bound from parameter `first` on, with each column of its table's type.
///
/// The arrays are unpacked in the select list (a ProjectSet, which streams its rows) rather
/// than by `unnest(a, b, …)` in FROM, which first copies every row into a tuplestore. The
/// arrays all have the batch's length, so both read the same rows.
fn unnest_select(cols: &[Column<'_>], first: usize) -> String {
    let arrays = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "unnest(${}::{}) AS {}",
                first + i,
                c.data.array_type(),
                c.name
            )
        })
        .collect::<Vec<_>>()
        .join(",\n                ");
    let values = cols
        .iter()
        .map(|c| match c.data.cast() {
            Some(t) => format!("x.{n}::{t} AS {n}", n = c.name),
            None => format!("x.{}", c.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("SELECT {values}\n  FROM (SELECT {arrays}) AS x")
}

/// Keeps every delivery in `raw_events`: identical bytes are one row whose count grows.
fn raw_upsert_sql(param: usize) -> String {
    let cols = raw_columns(&[]);
    format!(
        "INSERT INTO raw_events AS r ({names})
         {rows}
         ON CONFLICT (body_sha256) DO UPDATE
            SET last_received_at = greatest(r.last_received_at, excluded.last_received_at),
                received_at      = least(r.received_at, excluded.received_at),
                deliveries       = r.deliveries + excluded.deliveries,
                kind             = excluded.kind,
                error            = excluded.error,
                event_at         = coalesce(excluded.event_at, r.event_at)",
        names = names(&cols, ""),
        rows = unnest_select(&cols, param),
    )
}

/// The names of a table's columns, split as its statements use them.
struct TableNames {
    /// The key's columns.
    pub key: Vec<&'static str>,
    /// The other columns from the payload, `parse_warnings` last.
    pub values: Vec<&'static str>,
    /// Key and values: every column the writer sets but the delivery times.
    pub all: Vec<&'static str>,
}

impl TableNames {
    fn of<R: RecordTable + 'static>() -> (TableNames, Vec<Column<'static>>) {
        let cols = record_columns::<R>(&[]);
        let set = &cols[..cols.len() - 2]; // first_at, last_at come last
        let all: Vec<&'static str> = set.iter().map(|c| c.name).collect();
        let names = TableNames {
            key: all[..R::KEY].to_vec(),
            values: all[R::KEY..].to_vec(),
            all,
        };
        (names, cols)
    }
}

/// `prefix` + each column name, comma-separated.
fn names(cols: &[Column<'_>], prefix: &str) -> String {
    list(&cols.iter().map(|c| c.name).collect::<Vec<_>>(), prefix)
}

fn list(names: &[&str], prefix: &str) -> String {
    names
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the upsert of a table of records. Only the column names above go into the text:
/// values are always bound. `one_delivery`: every row's `first_at` equals its `last_at`
/// (live batches; not replay), so the delivery time is the `excluded` row's own `updated_at`
/// and need not be looked up in the input, which then is read once and not materialized.
fn upsert_parts<R: RecordTable + 'static>(
    input_name: &str,
    param: usize,
    one_delivery: bool,
) -> UpsertSql {
    let (n, cols) = TableNames::of::<R>();
    let key_match = n
        .key
        .iter()
        .map(|k| format!("i.{k} = excluded.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // A new row's times are its first delivery's; a changed row's `updated_at` is the
    // delivery that changed it (looked up in the input: `excluded` has table columns only),
    // and `received_at` can only move earlier (a replay meeting an older delivery late).
    let input = format!(
        "{input_name} AS ({rows})",
        rows = unnest_select(&cols, param)
    );
    let last_at = if one_delivery {
        "excluded.updated_at".to_owned()
    } else {
        format!("(SELECT i.last_at FROM {input_name} i WHERE {key_match} LIMIT 1)")
    };
    let insert = format!(
        "INSERT INTO {table} AS t ({all_names}, received_at, updated_at)
         SELECT {all_names}, first_at, first_at FROM {input_name}
         ON CONFLICT ({key_names}) DO UPDATE
            SET ({value_names}, updated_at, received_at) =
                ({excluded_values}, {last_at}, least(t.received_at, excluded.received_at))
          WHERE ({old_values}) IS DISTINCT FROM ({excluded_values})
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= {last_at}
         RETURNING {returned_keys}, (t.xmax = 0) AS inserted",
        table = R::TABLE,
        all_names = list(&n.all, ""),
        key_names = list(&n.key, ""),
        value_names = list(&n.values, ""),
        excluded_values = list(&n.values, "excluded."),
        old_values = list(&n.values, "t."),
        returned_keys = list(&n.key, "t."),
    );
    UpsertSql {
        input,
        insert,
        params: cols.len(),
    }
}

/// One table's upsert: the CTE that unpacks its rows, the `INSERT` itself, and how many
/// parameters the rows take.
struct UpsertSql {
    pub input: String,
    pub insert: String,
    pub params: usize,
}

impl UpsertSql {
    fn standalone(&self) -> String {
        format!("WITH {} {}", self.input, self.insert)
    }
}

/// What betting on new calls changes in the batch statement: the raw rows say which bodies
/// are new, only their calls are inserted, and without ON CONFLICT (a call or link stored
/// already fails the statement).
fn bet_clauses(new_calls: bool) -> (&'static str, &'static str, &'static str, &'static str) {
    if new_calls {
        (
            "body_sha256, (r.xmax = 0) AS inserted",
            // A filter, not a join: the calls keep their order (by call_sid, the lock order).
            "WHERE sha256 = ANY (ARRAY(SELECT body_sha256 FROM raw WHERE inserted))",
            "",
            "",
        )
    } else {
        (
            "1",
            "",
            "ON CONFLICT (call_sid) DO NOTHING",
            "ON CONFLICT DO NOTHING",
        )
    }
}

fn batch_sql(new_calls: bool) -> String {
    let raw_params = raw_columns(&[]).len();
    let call_cols = batch_call_columns(&[], new_calls.then(Vec::new));
    let calls_in = format!(
        "calls_in AS ({})",
        unnest_select(&call_cols, raw_params + 1)
    );
    let links = raw_params + call_cols.len() + 1;
    let sms = upsert_parts::<SmsRecord>("sms_in", links + 2, true);
    let status = upsert_parts::<CallStatusRecord>("status_in", links + 2 + sms.params, true);
    let (call_names, _) = TableNames::of::<CallRecord>();
    let links_in = format!("unnest(${links}::text[], ${}::bigint[])", links + 1);
    let (raw_returning, new_only, on_conflict, on_conflict_links) = bet_clauses(new_calls);
    let guard = links + 2 + sms.params + status.params;
    format!(
        "WITH raw AS ({raw} RETURNING {raw_returning}),
         {calls_in},
         calls_new AS (
             INSERT INTO calls ({all_names}, received_at, updated_at)
             SELECT {all_names}, first_at, first_at FROM calls_in
             {new_only}
             {on_conflict}
             RETURNING call_sid),
         -- ON CONFLICT although these calls were inserted by this very statement: links
         -- left behind by a call deleted by hand (call_tags has no foreign key) must not
         -- fail it. When betting, they do fail it, and it is written again with upserts.
         links AS (
             INSERT INTO call_tags (call_sid, tag_id)
             SELECT l.call_sid, l.tag_id
               FROM {links_in} AS l(call_sid, tag_id)
               JOIN calls_new USING (call_sid)
              ORDER BY 1, 2
             {on_conflict_links}
             RETURNING 1),
         -- Calls not inserted above (stored already, or of a body stored already when
         -- betting) and stored exactly so, tags included (as of this statement's
         -- snapshot): duplicates, settled here without a transaction of their own.
         -- Materialized, so that the tags are compared only for calls that matched (as
         -- one query, the planner compared them first, for every call of the batch).
         calls_match AS MATERIALIZED (
             SELECT i.call_sid
               FROM calls t JOIN calls_in i USING (call_sid)
              -- Index lookups, of the calls that were not just inserted (none, usually).
              WHERE t.call_sid = ANY (ARRAY(SELECT call_sid FROM calls_in
                                            EXCEPT SELECT call_sid FROM calls_new))
                AND ({old_values}) IS NOT DISTINCT FROM ({input_values})),
         calls_same AS (
             SELECT m.call_sid FROM calls_match m
              WHERE ARRAY(SELECT ct.tag_id FROM call_tags ct
                           WHERE ct.call_sid = m.call_sid ORDER BY 1)
                  = ARRAY(SELECT l.tag_id FROM {links_in} AS l(call_sid, tag_id)
                           WHERE l.call_sid = m.call_sid ORDER BY 1)),
         {sms_in},
         sms_up AS ({sms_insert}),
         {status_in},
         status_up AS ({status_insert})
         -- The branches run in this order, and so take their row locks table after table
         -- in the same order as every other write path: no deadlock between them.
         -- One row per written call, SMS and status; `part` names the branch it comes from.
         SELECT 'raw' AS part, NULL::text AS key, NULL::text AS status,
                NULL::timestamptz AS occurred_at, count(*) > 0 AS inserted FROM raw
         UNION ALL SELECT 'call_inserted', call_sid, NULL, NULL, true FROM calls_new
         UNION ALL SELECT 'links', NULL, NULL, NULL, count(*) > 0 FROM links
         UNION ALL SELECT 'call_unchanged', call_sid, NULL, NULL, false FROM calls_same
         UNION ALL SELECT 'sms', sms_key, NULL, NULL, inserted FROM sms_up
         UNION ALL SELECT 'status', call_sid, status, occurred_at, inserted FROM status_up
         -- Fails the statement, writing nothing, when erasures changed since the writer
         -- checked the batch against them (migration V5).
         UNION ALL SELECT 'guard', NULL, NULL, NULL, callhippo_erasures_unchanged(${guard}::bigint)",
        raw = raw_upsert_sql(1),
        all_names = list(&call_names.all, ""),
        old_values = list(&call_names.values, "t."),
        input_values = list(&call_names.values, "i."),
        sms_in = sms.input,
        sms_insert = sms.insert,
        status_in = status.input,
        status_insert = status.insert,
    )
}

/// Calls read from CallHippo's API (`FillEmpty`): a new call is inserted as the API's, with
/// `updated_at` at the call's end (so that its webhook, received after the call, still
/// completes it); a stored one only gains what webhooks never carry (`answered_at`,
/// `api_id`). Filling a column the webhook carries would not last: the webhook's next write
/// of the row (a redelivery, the spool, `replay`) holds its own value, empty or not.
fn fill_calls_sql() -> String {
    let cols = api_call_columns(&[]);
    let (n, _) = TableNames::of::<CallRecord>();
    // The columns only the API gives: those api_call_columns adds to a webhook's.
    let fill: Vec<&str> = (cols[record_columns::<CallRecord>(&[]).len()..].iter())
        .map(|c| c.name)
        .collect();
    let coalesced = (fill.iter())
        .map(|c| format!("COALESCE(t.{c}, excluded.{c})"))
        .collect::<Vec<_>>()
        .join(", ");
    let something_to_fill = (fill.iter())
        .map(|c| format!("(t.{c} IS NULL AND excluded.{c} IS NOT NULL)"))
        .collect::<Vec<_>>()
        .join("\n             OR ");
    format!(
        "WITH input AS ({rows})
         INSERT INTO calls AS t ({all}, answered_at, api_id, source, received_at, updated_at)
         SELECT {all}, answered_at, api_id, 'api', first_at, COALESCE(ended_at, started_at, first_at)
           FROM input
         ON CONFLICT (call_sid) DO UPDATE
            SET ({fill_names}) = ({coalesced})
          WHERE {something_to_fill}
         RETURNING t.call_sid, (t.xmax = 0) AS inserted",
        rows = unnest_select(&cols, 1),
        all = list(&n.all, ""),
        fill_names = list(&fill, ""),
    )
}

/// Every statement file, with what its table's column list makes of it.
fn statements() -> Vec<(&'static str, String)> {
    vec![
        ("raw_events_upsert.sql", raw_upsert_sql(1)),
        (
            "calls_upsert.sql",
            upsert_parts::<CallRecord>("input", 1, false).standalone(),
        ),
        (
            "sms_upsert.sql",
            upsert_parts::<SmsRecord>("input", 1, false).standalone(),
        ),
        (
            "call_status_upsert.sql",
            upsert_parts::<CallStatusRecord>("input", 1, false).standalone(),
        ),
        ("calls_fill.sql", fill_calls_sql()),
        ("batch.sql", batch_sql(false)),
        ("batch_betting.sql", batch_sql(true)),
    ]
}

#[test]
fn sql_files_match_the_column_lists() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/sql");
    for (file, made) in statements() {
        let path = dir.join(file);
        let text = format!("{}\n", made.trim());
        if std::env::var_os("UPDATE_SQL").is_some() {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == text,
            "src/store/sql/{file} is out of date with its table's column list: \
             run UPDATE_SQL=1 cargo test --lib sql_files, and read the change\n{text}"
        );
    }
}

#[test]
fn unnest_select_casts_text_sent_columns() {
    let rows = [(1, "a")];
    let cols = Columns::new(&rows)
        .int("n", |r| Some(r.0))
        .text("s", |r| Some(r.1))
        .jsonb("j", |_| None)
        .done();
    assert_eq!(
        unnest_select(&cols, 4),
        "SELECT x.n, x.s, x.j::jsonb AS j\n  FROM (SELECT unnest($4::integer[]) AS n,\n                unnest($5::text[]) AS s,\n                unnest($6::text[]) AS j) AS x"
    );
}
