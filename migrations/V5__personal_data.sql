-- V5: erasing a person (docs/reference.md §9): the erasures table, the guard every write
-- transaction calls so that no writer can store an erased identifier once `forget` has
-- run, the helpers that find an identifier in any text, and the event time of each raw
-- event, by which CALL_RETENTION_DAYS removes raw events with their rows.
-- Never edit this file once applied: add a new V<n>__*.sql instead.

CREATE TABLE erasures (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind              text        NOT NULL CHECK (kind IN ('phone', 'email', 'call_sid')),
    identifier_sha256 bytea       NOT NULL CHECK (length(identifier_sha256) = 32),
    requested_at      timestamptz NOT NULL DEFAULT now(),
    rows              jsonb       NOT NULL DEFAULT '{}',
    UNIQUE (kind, identifier_sha256)
);

COMMENT ON TABLE erasures IS 'Identifiers erased with callhippo-ingest forget. Later events about them are dropped (answered 200 suppressed). The identifier itself is never stored, only its digest.';
COMMENT ON COLUMN erasures.id IS 'Surrogate key; writers compare the highest one with what they last read.';
COMMENT ON COLUMN erasures.kind IS 'phone (digits only), email (lower case) or call_sid (as sent).';
COMMENT ON COLUMN erasures.identifier_sha256 IS 'SHA-256 of the normalised identifier: a phone number''s digits (15550102030), an e-mail address in lower case, a callSid as sent.';
COMMENT ON COLUMN erasures.requested_at IS 'When forget last ran for this identifier (UTC).';
COMMENT ON COLUMN erasures.rows IS 'Rows removed, by table (table name -> count), by the last forget of this identifier.';

-- Every write transaction calls this with the highest erasures.id it knows (0: none),
-- after which it writes only events about none of the erasures it knows. It fails with
-- SQLSTATE CHE01 when erasures changed since; the writer then reads them again and
-- retries. The transaction id taken here is what forget waits for: forget commits its
-- erasure, then waits for every transaction that had an id at that moment, then deletes.
-- A writer either took its id after the erasure committed (and then the query below sees
-- it: a volatile function's query takes a fresh snapshot), or forget waits for it and
-- deletes what it wrote.
CREATE FUNCTION callhippo_erasures_unchanged(seen bigint) RETURNS boolean
    LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM pg_current_xact_id();
    IF coalesce((SELECT max(id) FROM erasures), 0) <> seen THEN
        RAISE EXCEPTION 'erasures changed since this writer read them'
            USING ERRCODE = 'CHE01';
    END IF;
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION callhippo_erasures_unchanged(bigint) IS 'Guard of every write transaction: fails (SQLSTATE CHE01) when the highest erasures.id is not the one given.';

-- Whether a text holds an identifier, the same rules as the service's own check of each
-- event (src/erasure.rs). A phone number: with spaces, brackets, +, -, . and / (and their
-- %-encodings) removed, its digits appear with no digit just before or after.
CREATE FUNCTION callhippo_holds_phone(t text, digits text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT regexp_replace(t, '[ ()+./-]|%2[089bdefBDEF]', '', 'g')
           ~ ('(?<![0-9])' || digits || '(?![0-9])')
$fn$;
COMMENT ON FUNCTION callhippo_holds_phone(text, text) IS 'Whether text t holds the phone number whose digits are given, whatever its punctuation.';

-- An e-mail address (given in lower case): in any case, not inside a longer address.
CREATE FUNCTION callhippo_holds_email(t text, email text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT lower(t) ~ ('(?<![a-z0-9._%+-])'
                       || regexp_replace(email, '([^a-z0-9])', '\\\1', 'g')
                       || '(?![a-z0-9-]|\.[a-z0-9-])')
$fn$;
COMMENT ON FUNCTION callhippo_holds_email(text, text) IS 'Whether text t holds the e-mail address given (in lower case), in any case.';

-- A call's id: not inside a longer word of letters, digits, _ and -.
CREATE FUNCTION callhippo_holds_token(t text, token text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT t ~ ('(?<![A-Za-z0-9_-])'
                || regexp_replace(token, '([^A-Za-z0-9])', '\\\1', 'g')
                || '(?![A-Za-z0-9_-])')
$fn$;
COMMENT ON FUNCTION callhippo_holds_token(text, text) IS 'Whether text t holds the word given (a callSid), not as part of a longer one.';

-- NULL for rows written before this version, and for events that have no time (rejected,
-- unknown, tests): CALL_RETENTION_DAYS removes those by their last delivery.
ALTER TABLE raw_events ADD COLUMN event_at timestamptz;
COMMENT ON COLUMN raw_events.event_at IS 'When the event happened, UTC: the call''s start (else its log time), the SMS''s time, the status event''s time; NULL when the event has none. CALL_RETENTION_DAYS removes raw events by it.';
-- New events come in time order, so that this index grows at its end.
CREATE INDEX raw_events_event_at_idx ON raw_events (event_at) WHERE event_at IS NOT NULL;
-- Retention by time: status events, and calls that have no start time (calls_started_at_idx
-- serves the others). Both grow at their end too.
CREATE INDEX call_status_occurred_at_idx ON call_status (occurred_at);
CREATE INDEX calls_logged_at_unstarted_idx ON calls (logged_at) WHERE started_at IS NULL;

-- The reader reads every table (docs/reference.md §6), this one too; an operator who would
-- rather not show who asked to be erased revokes it (see §9).
DO $grant$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'callhippo_reader') THEN
        GRANT SELECT ON erasures TO callhippo_reader;
    END IF;
END
$grant$;
