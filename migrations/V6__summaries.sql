-- V6: summary tables behind the statistics views (docs/reference.md §6), days in
-- REPORT_TIMEZONE, and the call-centre figures.
--
-- How they stay exact whatever wrote the base tables: statement triggers on calls and sms
-- note the hour of every row a statement inserted, changed or deleted in rollup_dirty
-- (append-only: no row every writer locks), and callhippo_rollup(), run every few seconds
-- by one serve at a time (and by `callhippo-ingest rollup`), recomputes the local days of
-- those hours from the base tables, in one REPEATABLE READ transaction that also removes
-- the marks it saw. Marks are in UTC hours, not days, so that they mean the same whatever
-- the report's zone; a change of zone (or of a call-centre setting) rebuilds everything.
-- Never edit this file once applied: add a new V<n>__*.sql instead.

CREATE TABLE rollup_state (
    only_row              boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    zone                  text,
    service_level_seconds integer,
    callback_window       interval,
    rebuild               boolean NOT NULL DEFAULT true,
    built_at              timestamptz,
    caught_up_at          timestamptz
);
INSERT INTO rollup_state DEFAULT VALUES;
COMMENT ON TABLE rollup_state IS 'How the summary tables were built: one row.';
COMMENT ON COLUMN rollup_state.only_row IS 'Always true: the table has one row.';
COMMENT ON COLUMN rollup_state.zone IS 'REPORT_TIMEZONE the summaries'' days are in (IANA name).';
COMMENT ON COLUMN rollup_state.service_level_seconds IS 'SERVICE_LEVEL_SECONDS the call-centre figures use (seconds).';
COMMENT ON COLUMN rollup_state.callback_window IS 'CALLBACK_WINDOW the unreturned missed calls use.';
COMMENT ON COLUMN rollup_state.rebuild IS 'True when the summaries must be rebuilt from scratch (never built, or a base table was truncated).';
COMMENT ON COLUMN rollup_state.built_at IS 'When the summaries were last rebuilt from scratch (UTC).';
COMMENT ON COLUMN rollup_state.caught_up_at IS 'When the summaries last caught up with the base tables (UTC): they hold everything committed before then.';

CREATE TABLE rollup_dirty (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text NOT NULL CHECK (source IN ('calls', 'sms')),
    hour   timestamptz
);
COMMENT ON TABLE rollup_dirty IS 'Hours whose summaries are to be recomputed, noted by triggers on calls and sms; removed once recomputed.';
COMMENT ON COLUMN rollup_dirty.id IS 'Surrogate key.';
COMMENT ON COLUMN rollup_dirty.source IS 'The base table a statement changed: calls or sms.';
COMMENT ON COLUMN rollup_dirty.hour IS 'Start of an hour (UTC instant) holding the time of a changed row; NULL for rows without a time.';

CREATE FUNCTION callhippo_rollup_mark_calls() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO rollup_dirty (source, hour)
        SELECT DISTINCT 'calls', date_trunc('hour', COALESCE(started_at, logged_at)) FROM new_rows;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO rollup_dirty (source, hour)
        SELECT DISTINCT 'calls', date_trunc('hour', COALESCE(started_at, logged_at)) FROM old_rows;
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION callhippo_rollup_mark_calls() IS 'Notes in rollup_dirty the hours of the calls a statement changed.';

CREATE FUNCTION callhippo_rollup_mark_sms() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO rollup_dirty (source, hour)
        SELECT DISTINCT 'sms', date_trunc('hour', logged_at) FROM new_rows;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO rollup_dirty (source, hour)
        SELECT DISTINCT 'sms', date_trunc('hour', logged_at) FROM old_rows;
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION callhippo_rollup_mark_sms() IS 'Notes in rollup_dirty the hours of the SMS a statement changed.';

CREATE FUNCTION callhippo_rollup_truncated() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE rollup_state SET rebuild = true;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION callhippo_rollup_truncated() IS 'A base table was truncated: the summaries are rebuilt.';

CREATE TRIGGER calls_rollup_insert AFTER INSERT ON calls REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_mark_calls();
CREATE TRIGGER calls_rollup_update AFTER UPDATE ON calls REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_mark_calls();
CREATE TRIGGER calls_rollup_delete AFTER DELETE ON calls REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_mark_calls();
CREATE TRIGGER calls_rollup_truncate AFTER TRUNCATE ON calls
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_truncated();
CREATE TRIGGER sms_rollup_insert AFTER INSERT ON sms REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_mark_sms();
CREATE TRIGGER sms_rollup_update AFTER UPDATE ON sms REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_mark_sms();
CREATE TRIGGER sms_rollup_delete AFTER DELETE ON sms REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_mark_sms();
CREATE TRIGGER sms_rollup_truncate AFTER TRUNCATE ON sms
    FOR EACH STATEMENT EXECUTE FUNCTION callhippo_rollup_truncated();

-- The summaries. `day` is a calendar day in rollup_state.zone, NULL for rows without a time.

CREATE TABLE call_daily_summary (
    day            date,
    call_type      text,
    status         text,
    calls          bigint NOT NULL,
    talk_seconds   bigint,
    billed_minutes bigint,
    total_charge   numeric
);
CREATE INDEX call_daily_summary_day_idx ON call_daily_summary (day);
COMMENT ON TABLE call_daily_summary IS 'What call_daily_stats shows, kept by callhippo_rollup().';
COMMENT ON COLUMN call_daily_summary.day IS 'Day in REPORT_TIMEZONE of the call''s start (else its log time).';
COMMENT ON COLUMN call_daily_summary.call_type IS 'incoming or outgoing.';
COMMENT ON COLUMN call_daily_summary.status IS 'Call outcome.';
COMMENT ON COLUMN call_daily_summary.calls IS 'Number of calls.';
COMMENT ON COLUMN call_daily_summary.talk_seconds IS 'Total talk time, in seconds.';
COMMENT ON COLUMN call_daily_summary.billed_minutes IS 'Total billed minutes.';
COMMENT ON COLUMN call_daily_summary.total_charge IS 'Total charge, in the account''s currency.';

CREATE TABLE agent_daily_summary (
    day            date,
    agent_email    text COLLATE "C",
    calls          bigint NOT NULL,
    completed      bigint NOT NULL,
    missed         bigint NOT NULL,
    talk_seconds   bigint,
    billed_minutes bigint
);
CREATE INDEX agent_daily_summary_day_idx ON agent_daily_summary (day);
COMMENT ON TABLE agent_daily_summary IS 'What agent_daily_stats shows, kept by callhippo_rollup().';
COMMENT ON COLUMN agent_daily_summary.day IS 'Day in REPORT_TIMEZONE of the call''s start (else its log time).';
COMMENT ON COLUMN agent_daily_summary.agent_email IS 'The agent (NULL: calls without one).';
COMMENT ON COLUMN agent_daily_summary.calls IS 'Number of calls.';
COMMENT ON COLUMN agent_daily_summary.completed IS 'Calls with status completed.';
COMMENT ON COLUMN agent_daily_summary.missed IS 'Calls with status missed or no_answer.';
COMMENT ON COLUMN agent_daily_summary.talk_seconds IS 'Total talk time, in seconds.';
COMMENT ON COLUMN agent_daily_summary.billed_minutes IS 'Total billed minutes.';

CREATE TABLE sms_daily_summary (
    day          date,
    sms_type     text,
    status       text,
    messages     bigint NOT NULL,
    total_charge numeric
);
CREATE INDEX sms_daily_summary_day_idx ON sms_daily_summary (day);
COMMENT ON TABLE sms_daily_summary IS 'What sms_daily_stats shows, kept by callhippo_rollup().';
COMMENT ON COLUMN sms_daily_summary.day IS 'Day in REPORT_TIMEZONE of the message''s time.';
COMMENT ON COLUMN sms_daily_summary.sms_type IS 'incoming or outgoing.';
COMMENT ON COLUMN sms_daily_summary.status IS 'Delivery status.';
COMMENT ON COLUMN sms_daily_summary.messages IS 'Number of messages.';
COMMENT ON COLUMN sms_daily_summary.total_charge IS 'Total charge, in the account''s currency.';

CREATE TABLE agent_activity_daily (
    day            date,
    agent_email    text COLLATE "C" NOT NULL,
    calls          bigint NOT NULL,
    sms            bigint NOT NULL,
    first_activity timestamptz,
    last_activity  timestamptz,
    agent_name     text,
    named_at       timestamptz
);
CREATE INDEX agent_activity_daily_day_idx ON agent_activity_daily (day);
CREATE INDEX agent_activity_daily_agent_idx ON agent_activity_daily (agent_email);
COMMENT ON TABLE agent_activity_daily IS 'Each agent''s calls and SMS per day, from which agents_summary is made; kept by callhippo_rollup().';
COMMENT ON COLUMN agent_activity_daily.day IS 'Day in REPORT_TIMEZONE.';
COMMENT ON COLUMN agent_activity_daily.agent_email IS 'The agent.';
COMMENT ON COLUMN agent_activity_daily.calls IS 'Calls that day.';
COMMENT ON COLUMN agent_activity_daily.sms IS 'SMS that day.';
COMMENT ON COLUMN agent_activity_daily.first_activity IS 'Time of the first call or SMS that day (UTC).';
COMMENT ON COLUMN agent_activity_daily.last_activity IS 'Time of the last call or SMS that day (UTC).';
COMMENT ON COLUMN agent_activity_daily.agent_name IS 'The agent''s name on the latest call or SMS that day that had one.';
COMMENT ON COLUMN agent_activity_daily.named_at IS 'The time of that call or SMS.';

CREATE TABLE agents_summary (
    agent_email    text COLLATE "C" PRIMARY KEY,
    agent_name     text,
    first_activity timestamptz,
    last_activity  timestamptz,
    calls          bigint NOT NULL,
    sms            bigint NOT NULL
);
COMMENT ON TABLE agents_summary IS 'What the agents view shows, kept by callhippo_rollup().';
COMMENT ON COLUMN agents_summary.agent_email IS 'The agent.';
COMMENT ON COLUMN agents_summary.agent_name IS 'The agent''s latest name seen.';
COMMENT ON COLUMN agents_summary.first_activity IS 'First call or SMS (UTC).';
COMMENT ON COLUMN agents_summary.last_activity IS 'Last call or SMS (UTC).';
COMMENT ON COLUMN agents_summary.calls IS 'Calls handled.';
COMMENT ON COLUMN agents_summary.sms IS 'SMS handled.';

CREATE TABLE unreturned_missed (
    call_sid       text COLLATE "C" PRIMARY KEY,
    day            date,
    caller_number  text COLLATE "C",
    missed_at      timestamptz,
    agent_email    text COLLATE "C",
    virtual_number text,
    attempts       bigint NOT NULL
);
CREATE INDEX unreturned_missed_day_idx ON unreturned_missed (day);
CREATE INDEX unreturned_missed_missed_at_idx ON unreturned_missed (missed_at);
COMMENT ON TABLE unreturned_missed IS 'What unreturned_missed_calls shows, kept by callhippo_rollup().';
COMMENT ON COLUMN unreturned_missed.call_sid IS 'The missed call.';
COMMENT ON COLUMN unreturned_missed.day IS 'Day in REPORT_TIMEZONE of missed_at.';
COMMENT ON COLUMN unreturned_missed.caller_number IS 'Who called (from_number).';
COMMENT ON COLUMN unreturned_missed.missed_at IS 'When the call came (its start, else its log time; UTC).';
COMMENT ON COLUMN unreturned_missed.agent_email IS 'The agent it rang for.';
COMMENT ON COLUMN unreturned_missed.virtual_number IS 'The CallHippo number called.';
COMMENT ON COLUMN unreturned_missed.attempts IS 'Missed incoming calls from that number within CALLBACK_WINDOW from this one, this one included.';

CREATE TABLE callcenter_daily_summary (
    day                 date,
    agent_email         text COLLATE "C",
    incoming            bigint NOT NULL,
    answered            bigint NOT NULL,
    missed              bigint NOT NULL,
    voicemail           bigint NOT NULL,
    answered_ring_sum   bigint,
    answered_ring_count bigint NOT NULL,
    within_service      bigint NOT NULL,
    outgoing            bigint NOT NULL,
    handle_sum          bigint,
    handle_count        bigint NOT NULL,
    unreturned_missed   bigint NOT NULL
);
CREATE INDEX callcenter_daily_summary_day_idx ON callcenter_daily_summary (day);
COMMENT ON TABLE callcenter_daily_summary IS 'The sums behind callcenter_daily_stats, kept by callhippo_rollup(); agent_email NULL is the whole account.';
COMMENT ON COLUMN callcenter_daily_summary.day IS 'Day in REPORT_TIMEZONE.';
COMMENT ON COLUMN callcenter_daily_summary.agent_email IS 'The agent; NULL: the whole account (calls without an agent count there only).';
COMMENT ON COLUMN callcenter_daily_summary.incoming IS 'Incoming calls.';
COMMENT ON COLUMN callcenter_daily_summary.answered IS 'Incoming calls completed.';
COMMENT ON COLUMN callcenter_daily_summary.missed IS 'Incoming calls missed, no_answer, rejected, cancelled or unavailable.';
COMMENT ON COLUMN callcenter_daily_summary.voicemail IS 'Incoming calls that went to voicemail.';
COMMENT ON COLUMN callcenter_daily_summary.answered_ring_sum IS 'Sum of ring_seconds of answered incoming calls (seconds).';
COMMENT ON COLUMN callcenter_daily_summary.answered_ring_count IS 'Answered incoming calls with ring_seconds.';
COMMENT ON COLUMN callcenter_daily_summary.within_service IS 'Incoming calls answered within SERVICE_LEVEL_SECONDS of ringing.';
COMMENT ON COLUMN callcenter_daily_summary.outgoing IS 'Outgoing calls.';
COMMENT ON COLUMN callcenter_daily_summary.handle_sum IS 'Sum of duration_seconds of completed calls (seconds).';
COMMENT ON COLUMN callcenter_daily_summary.handle_count IS 'Completed calls with duration_seconds.';
COMMENT ON COLUMN callcenter_daily_summary.unreturned_missed IS 'Missed incoming calls not returned (unreturned_missed).';

-- The calls (and SMS) of some days in a zone, each with its day: index range scans on
-- the time columns, one per day.
CREATE FUNCTION callhippo_rollup_calls(days date[], timeless boolean, zone text)
RETURNS TABLE (day date, at timestamptz, call_sid text, call_type text, status text,
               from_number text, duration_seconds integer, ring_seconds integer,
               billed_minutes integer, call_charge numeric, agent_email text,
               agent_name text, virtual_number text)
LANGUAGE sql STABLE AS $fn$
    SELECT d.day, c.started_at, c.call_sid, c.call_type, c.status, c.from_number,
           c.duration_seconds, c.ring_seconds, c.billed_minutes, c.call_charge,
           c.agent_email, c.agent_name, c.virtual_number
      FROM unnest(days) AS d(day)
      JOIN calls c ON c.started_at >= (d.day::timestamp AT TIME ZONE zone)
                  AND c.started_at < ((d.day + 1)::timestamp AT TIME ZONE zone)
    UNION ALL
    SELECT d.day, c.logged_at, c.call_sid, c.call_type, c.status, c.from_number,
           c.duration_seconds, c.ring_seconds, c.billed_minutes, c.call_charge,
           c.agent_email, c.agent_name, c.virtual_number
      FROM unnest(days) AS d(day)
      JOIN calls c ON c.started_at IS NULL
                  AND c.logged_at >= (d.day::timestamp AT TIME ZONE zone)
                  AND c.logged_at < ((d.day + 1)::timestamp AT TIME ZONE zone)
    UNION ALL
    SELECT NULL, NULL, c.call_sid, c.call_type, c.status, c.from_number,
           c.duration_seconds, c.ring_seconds, c.billed_minutes, c.call_charge,
           c.agent_email, c.agent_name, c.virtual_number
      FROM calls c
     WHERE timeless AND c.started_at IS NULL AND c.logged_at IS NULL
$fn$;
COMMENT ON FUNCTION callhippo_rollup_calls(date[], boolean, text) IS 'The calls of these days in this zone (and, when timeless, those without a time), with their day and time.';

CREATE FUNCTION callhippo_rollup_sms(days date[], zone text)
RETURNS TABLE (day date, at timestamptz, sms_type text, status text, sms_charge numeric,
               agent_email text, agent_name text)
LANGUAGE sql STABLE AS $fn$
    SELECT d.day, m.logged_at, m.sms_type, m.status, m.sms_charge, m.agent_email, m.agent_name
      FROM unnest(days) AS d(day)
      JOIN sms m ON m.logged_at >= (d.day::timestamp AT TIME ZONE zone)
                AND m.logged_at < ((d.day + 1)::timestamp AT TIME ZONE zone)
$fn$;
COMMENT ON FUNCTION callhippo_rollup_sms(date[], text) IS 'The SMS of these days in this zone, with their day.';

-- Missed incoming calls: the statuses §6 counts as missed.
CREATE FUNCTION callhippo_is_missed(call_type text, status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT call_type = 'incoming'
       AND status IN ('missed', 'no_answer', 'rejected', 'cancelled', 'unavailable')
$fn$;
COMMENT ON FUNCTION callhippo_is_missed(text, text) IS 'Whether a call is a missed incoming call (missed, no_answer, rejected, cancelled, unavailable).';

-- Brings every summary up to date with the base tables, for days in `zone`; rebuilds them
-- all when the zone or a call-centre setting changed, or rebuild is asked. Call it in a
-- REPEATABLE READ transaction, one caller at a time (serve takes an advisory lock).
CREATE FUNCTION callhippo_rollup(zone text, service_level_seconds integer, callback_window interval,
                                 OUT rebuilt boolean, OUT marks bigint, OUT days integer)
LANGUAGE plpgsql AS $fn$
DECLARE
    st      rollup_state%ROWTYPE;
    v_days  date[];
    v_null  boolean;
    v_agents text[];
BEGIN
    SELECT * INTO st FROM rollup_state;
    rebuilt := st.rebuild OR st.zone IS DISTINCT FROM zone
            OR st.service_level_seconds IS DISTINCT FROM service_level_seconds
            OR st.callback_window IS DISTINCT FROM callback_window;
    SELECT count(*) INTO marks FROM rollup_dirty;
    IF rebuilt THEN
        SELECT array_agg(DISTINCT x.d) FILTER (WHERE x.d IS NOT NULL), coalesce(bool_or(x.d IS NULL), false)
          INTO v_days, v_null
          FROM (SELECT (COALESCE(c.started_at, c.logged_at) AT TIME ZONE zone)::date AS d FROM calls c
                UNION SELECT (m.logged_at AT TIME ZONE zone)::date FROM sms m) AS x;
        DELETE FROM call_daily_summary;
        DELETE FROM agent_daily_summary;
        DELETE FROM sms_daily_summary;
        DELETE FROM agent_activity_daily;
        DELETE FROM agents_summary;
        DELETE FROM unreturned_missed;
        DELETE FROM callcenter_daily_summary;
    ELSE
        IF marks = 0 THEN
            UPDATE rollup_state SET caught_up_at = now();
            days := 0;
            RETURN;
        END IF;
        -- A call can return missed calls of the window before it: those days too.
        SELECT array_agg(DISTINCT x.d) FILTER (WHERE x.d IS NOT NULL), coalesce(bool_or(x.d IS NULL), false)
          INTO v_days, v_null
          FROM (SELECT CASE WHEN r.hour IS NULL THEN NULL ELSE g.d::date END AS d
                  FROM rollup_dirty r
                  CROSS JOIN LATERAL generate_series(
                      ((COALESCE(r.hour, now()) - CASE WHEN r.source = 'calls' THEN callback_window ELSE interval '0' END)
                          AT TIME ZONE zone)::date,
                      ((COALESCE(r.hour, now()) + interval '1 hour' - interval '1 microsecond') AT TIME ZONE zone)::date,
                      interval '1 day') AS g(d)) AS x;
        v_days := coalesce(v_days, '{}');
        SELECT array_agg(DISTINCT a.agent_email) INTO v_agents
          FROM agent_activity_daily a WHERE a.day = ANY (v_days) OR (v_null AND a.day IS NULL);
        DELETE FROM call_daily_summary s WHERE s.day = ANY (v_days) OR (v_null AND s.day IS NULL);
        DELETE FROM agent_daily_summary s WHERE s.day = ANY (v_days) OR (v_null AND s.day IS NULL);
        DELETE FROM sms_daily_summary s WHERE s.day = ANY (v_days) OR (v_null AND s.day IS NULL);
        DELETE FROM agent_activity_daily s WHERE s.day = ANY (v_days) OR (v_null AND s.day IS NULL);
        DELETE FROM unreturned_missed s WHERE s.day = ANY (v_days) OR (v_null AND s.day IS NULL);
        DELETE FROM callcenter_daily_summary s WHERE s.day = ANY (v_days) OR (v_null AND s.day IS NULL);
    END IF;
    v_days := coalesce(v_days, '{}');
    DELETE FROM rollup_dirty;  -- the marks this transaction's snapshot sees, and no other

    -- The calls of those days, read once for every summary below.
    CREATE TEMP TABLE rollup_calls_now ON COMMIT DROP AS
        SELECT * FROM callhippo_rollup_calls(v_days, v_null, zone);

    INSERT INTO call_daily_summary
    SELECT c.day, c.call_type, c.status, count(*), sum(c.duration_seconds), sum(c.billed_minutes), sum(c.call_charge)
      FROM rollup_calls_now c GROUP BY 1, 2, 3;

    INSERT INTO agent_daily_summary
    SELECT c.day, c.agent_email, count(*),
           count(*) FILTER (WHERE c.status = 'completed'),
           count(*) FILTER (WHERE c.status IN ('missed', 'no_answer')),
           sum(c.duration_seconds), sum(c.billed_minutes)
      FROM rollup_calls_now c GROUP BY 1, 2;

    INSERT INTO sms_daily_summary
    SELECT m.day, m.sms_type, m.status, count(*), sum(m.sms_charge)
      FROM callhippo_rollup_sms(v_days, zone) m GROUP BY 1, 2, 3;

    INSERT INTO agent_activity_daily
    SELECT a.day, a.agent_email, sum(a.is_call), sum(a.is_sms), min(a.at), max(a.at),
           (array_agg(a.agent_name ORDER BY a.at DESC NULLS LAST) FILTER (WHERE a.agent_name IS NOT NULL))[1],
           (array_agg(a.at ORDER BY a.at DESC NULLS LAST) FILTER (WHERE a.agent_name IS NOT NULL))[1]
      FROM (SELECT c.day, c.agent_email, c.agent_name, c.at, 1 AS is_call, 0 AS is_sms
              FROM rollup_calls_now c WHERE c.agent_email IS NOT NULL
            UNION ALL
            SELECT m.day, m.agent_email, m.agent_name, m.at, 0, 1
              FROM callhippo_rollup_sms(v_days, zone) m WHERE m.agent_email IS NOT NULL) AS a
     GROUP BY 1, 2;

    IF rebuilt THEN
        INSERT INTO agents_summary
        SELECT a.agent_email,
               (array_agg(a.agent_name ORDER BY a.named_at DESC NULLS LAST) FILTER (WHERE a.agent_name IS NOT NULL))[1],
               min(a.first_activity), max(a.last_activity), sum(a.calls)::bigint, sum(a.sms)::bigint
          FROM agent_activity_daily a GROUP BY 1;
    ELSE
        SELECT array_agg(DISTINCT x.e) INTO v_agents
          FROM (SELECT unnest(v_agents) AS e
                UNION SELECT a.agent_email FROM agent_activity_daily a
                       WHERE a.day = ANY (v_days) OR (v_null AND a.day IS NULL)) AS x;
        DELETE FROM agents_summary s WHERE s.agent_email = ANY (v_agents);
        INSERT INTO agents_summary
        SELECT a.agent_email,
               (array_agg(a.agent_name ORDER BY a.named_at DESC NULLS LAST) FILTER (WHERE a.agent_name IS NOT NULL))[1],
               min(a.first_activity), max(a.last_activity), sum(a.calls)::bigint, sum(a.sms)::bigint
          FROM agent_activity_daily a WHERE a.agent_email = ANY (v_agents) GROUP BY 1;
    END IF;

    -- Missed incoming calls that no outgoing call to the number, and no answered incoming
    -- call from it, followed within the window.
    INSERT INTO unreturned_missed
    SELECT m.call_sid, m.day, m.from_number, m.at, m.agent_email, m.virtual_number,
           (SELECT count(*) FROM calls a
             WHERE a.from_number = m.from_number AND callhippo_is_missed(a.call_type, a.status)
               AND COALESCE(a.started_at, a.logged_at) >= m.at
               AND COALESCE(a.started_at, a.logged_at) <= m.at + callback_window)
      FROM rollup_calls_now m
     WHERE callhippo_is_missed(m.call_type, m.status) AND m.from_number IS NOT NULL
       AND m.at IS NOT NULL
       AND NOT EXISTS (SELECT FROM calls o
                        WHERE o.to_number = m.from_number AND o.call_type = 'outgoing'
                          AND COALESCE(o.started_at, o.logged_at) > m.at
                          AND COALESCE(o.started_at, o.logged_at) <= m.at + callback_window)
       AND NOT EXISTS (SELECT FROM calls i
                        WHERE i.from_number = m.from_number AND i.call_type = 'incoming'
                          AND i.status = 'completed'
                          AND COALESCE(i.started_at, i.logged_at) > m.at
                          AND COALESCE(i.started_at, i.logged_at) <= m.at + callback_window);

    INSERT INTO callcenter_daily_summary
    SELECT c.day, c.agent_email,
           count(*) FILTER (WHERE c.call_type = 'incoming'),
           count(*) FILTER (WHERE c.call_type = 'incoming' AND c.status = 'completed'),
           count(*) FILTER (WHERE callhippo_is_missed(c.call_type, c.status)),
           count(*) FILTER (WHERE c.call_type = 'incoming' AND c.status = 'voicemail'),
           sum(c.ring_seconds) FILTER (WHERE c.call_type = 'incoming' AND c.status = 'completed'),
           count(c.ring_seconds) FILTER (WHERE c.call_type = 'incoming' AND c.status = 'completed'),
           count(*) FILTER (WHERE c.call_type = 'incoming' AND c.status = 'completed'
                              AND c.ring_seconds <= service_level_seconds),
           count(*) FILTER (WHERE c.call_type = 'outgoing'),
           sum(c.duration_seconds) FILTER (WHERE c.status = 'completed'),
           count(c.duration_seconds) FILTER (WHERE c.status = 'completed'),
           count(u.call_sid)
      FROM (SELECT c.*, false AS account FROM rollup_calls_now c WHERE c.agent_email IS NOT NULL
            UNION ALL
            SELECT c.day, c.at, c.call_sid, c.call_type, c.status, c.from_number, c.duration_seconds,
                   c.ring_seconds, c.billed_minutes, c.call_charge, NULL, c.agent_name,
                   c.virtual_number, true
              FROM rollup_calls_now c) AS c
      LEFT JOIN unreturned_missed u ON u.call_sid = c.call_sid
     GROUP BY c.day, c.agent_email, c.account;

    UPDATE rollup_state AS s
       SET zone = callhippo_rollup.zone,
           service_level_seconds = callhippo_rollup.service_level_seconds,
           callback_window = callhippo_rollup.callback_window,
           rebuild = false,
           built_at = CASE WHEN rebuilt THEN now() ELSE s.built_at END,
           caught_up_at = now();
    days := coalesce(array_length(v_days, 1), 0) + v_null::int;
END
$fn$;
COMMENT ON FUNCTION callhippo_rollup(text, integer, interval) IS 'Brings the summary tables up to date with calls and sms (see migration V6).';

-- Today in the report's zone: what a dashboard compares the views' days with.
CREATE FUNCTION callhippo_today() RETURNS date LANGUAGE sql STABLE AS $fn$
    SELECT (now() AT TIME ZONE COALESCE((SELECT zone FROM rollup_state), 'UTC'))::date
$fn$;
COMMENT ON FUNCTION callhippo_today() IS 'Today''s date in REPORT_TIMEZONE (the zone of the statistics views'' days).';

-- The statistics views, now reading the summaries (same columns, same privileges).
CREATE OR REPLACE VIEW call_daily_stats AS
SELECT day, call_type, status, calls, talk_seconds, billed_minutes, total_charge
  FROM call_daily_summary;
COMMENT ON VIEW call_daily_stats IS 'Calls per day (in REPORT_TIMEZONE, of started_at, else logged_at), call type and status; read from call_daily_summary.';
COMMENT ON COLUMN call_daily_stats.day IS 'Day in REPORT_TIMEZONE of the call''s start (or of its log when the start is unknown).';

-- agent_email keeps the collation V3 gave the views' column ("C", or the default where V3
-- left the views alone): a view column cannot change it.
DO $views$
DECLARE
    agent_coll  text;
    agents_coll text;
BEGIN
    SELECT quote_ident(co.collname) INTO agent_coll
      FROM pg_attribute a JOIN pg_collation co ON co.oid = a.attcollation
     WHERE a.attrelid = 'agent_daily_stats'::regclass AND a.attname = 'agent_email';
    SELECT quote_ident(co.collname) INTO agents_coll
      FROM pg_attribute a JOIN pg_collation co ON co.oid = a.attcollation
     WHERE a.attrelid = 'agents'::regclass AND a.attname = 'agent_email';
    EXECUTE format(
        'CREATE OR REPLACE VIEW agent_daily_stats AS
         SELECT day, agent_email COLLATE %s AS agent_email, calls, completed, missed, talk_seconds, billed_minutes
           FROM agent_daily_summary', agent_coll);
    EXECUTE format(
        'CREATE OR REPLACE VIEW agents AS
         SELECT agent_email COLLATE %s AS agent_email, agent_name, first_activity, last_activity, calls, sms
           FROM agents_summary', agents_coll);
END
$views$;
COMMENT ON VIEW agent_daily_stats IS 'Calls per day (in REPORT_TIMEZONE) and agent; read from agent_daily_summary.';
COMMENT ON COLUMN agent_daily_stats.day IS 'Day in REPORT_TIMEZONE of the call''s start (or of its log).';

CREATE OR REPLACE VIEW sms_daily_stats AS
SELECT day, sms_type, status, messages, total_charge
  FROM sms_daily_summary;
COMMENT ON VIEW sms_daily_stats IS 'SMS per day (in REPORT_TIMEZONE, of logged_at), type and status; read from sms_daily_summary.';
COMMENT ON COLUMN sms_daily_stats.day IS 'Day in REPORT_TIMEZONE of the message''s time.';

CREATE VIEW callcenter_daily_stats AS
SELECT day, agent_email, incoming, answered, missed, voicemail,
       answered::numeric / NULLIF(incoming, 0)                       AS answer_rate,
       answered_ring_sum::numeric / NULLIF(answered_ring_count, 0)  AS avg_speed_of_answer_seconds,
       within_service::numeric / NULLIF(incoming, 0)                 AS service_level,
       outgoing,
       handle_sum::numeric / NULLIF(handle_count, 0)                 AS avg_handle_seconds,
       unreturned_missed
  FROM callcenter_daily_summary;
COMMENT ON VIEW callcenter_daily_stats IS 'Call-centre figures per day (in REPORT_TIMEZONE) and agent; agent_email NULL is the whole account.';
COMMENT ON COLUMN callcenter_daily_stats.day IS 'Day in REPORT_TIMEZONE of the call''s start (or of its log).';
COMMENT ON COLUMN callcenter_daily_stats.agent_email IS 'The agent; NULL: the whole account (calls without an agent count there only).';
COMMENT ON COLUMN callcenter_daily_stats.incoming IS 'Incoming calls.';
COMMENT ON COLUMN callcenter_daily_stats.answered IS 'Incoming calls completed.';
COMMENT ON COLUMN callcenter_daily_stats.missed IS 'Incoming calls missed, no_answer, rejected, cancelled or unavailable.';
COMMENT ON COLUMN callcenter_daily_stats.voicemail IS 'Incoming calls that went to voicemail.';
COMMENT ON COLUMN callcenter_daily_stats.answer_rate IS 'answered / incoming (0 to 1; NULL without incoming calls).';
COMMENT ON COLUMN callcenter_daily_stats.avg_speed_of_answer_seconds IS 'Mean ring_seconds of answered incoming calls (seconds).';
COMMENT ON COLUMN callcenter_daily_stats.service_level IS 'Share of incoming calls answered within SERVICE_LEVEL_SECONDS of ringing (0 to 1).';
COMMENT ON COLUMN callcenter_daily_stats.outgoing IS 'Outgoing calls.';
COMMENT ON COLUMN callcenter_daily_stats.avg_handle_seconds IS 'Mean duration_seconds of completed calls, incoming and outgoing (seconds).';
COMMENT ON COLUMN callcenter_daily_stats.unreturned_missed IS 'Missed incoming calls that day not returned within CALLBACK_WINDOW (so far, for the window not yet passed).';

CREATE VIEW unreturned_missed_calls AS
SELECT u.call_sid, u.caller_number, u.missed_at, u.agent_email, u.virtual_number, u.attempts,
       CASE WHEN now() < u.missed_at + s.callback_window THEN now() - u.missed_at END AS waiting
  FROM unreturned_missed u CROSS JOIN rollup_state s;
COMMENT ON VIEW unreturned_missed_calls IS 'Missed incoming calls whose caller was neither called back nor answered on a later call within CALLBACK_WINDOW.';
COMMENT ON COLUMN unreturned_missed_calls.call_sid IS 'The missed call.';
COMMENT ON COLUMN unreturned_missed_calls.caller_number IS 'Who called (from_number).';
COMMENT ON COLUMN unreturned_missed_calls.missed_at IS 'When the call came (UTC).';
COMMENT ON COLUMN unreturned_missed_calls.agent_email IS 'The agent it rang for.';
COMMENT ON COLUMN unreturned_missed_calls.virtual_number IS 'The CallHippo number called.';
COMMENT ON COLUMN unreturned_missed_calls.attempts IS 'Missed incoming calls from that number within CALLBACK_WINDOW from this one, this one included.';
COMMENT ON COLUMN unreturned_missed_calls.waiting IS 'How long since the call, while CALLBACK_WINDOW runs; NULL once it has passed (the caller was not returned in time).';

DO $grant$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'callhippo_reader') THEN
        GRANT SELECT ON rollup_state, call_daily_summary, agent_daily_summary, sms_daily_summary,
                        agent_activity_daily, agents_summary, unreturned_missed,
                        callcenter_daily_summary, callcenter_daily_stats, unreturned_missed_calls
           TO callhippo_reader;
    END IF;
END
$grant$;
