-- V7: a catch-up of a day of hundreds of thousands of calls in seconds, not minutes.
-- callhippo_rollup() as in V6 (same arguments, same results), but for the unreturned missed
-- calls. V6 ran three correlated subqueries per missed call over calls by number: work that
-- grows with the calls per number, and on a database without statistics yet (new, under
-- load) the planner nested them over whole-table scans, so that one day of 360,000 calls
-- ran for more than ten minutes. Now one sorted pass over the calls of the numbers and the
-- time involved gives, per number in time order, window counts of callbacks and attempts.
-- The temporary table of the recomputed calls is analyzed before it is read.
-- Never edit this file once applied: add a new V<n>__*.sql instead.

CREATE OR REPLACE FUNCTION callhippo_rollup(zone text, service_level_seconds integer, callback_window interval,
                                 OUT rebuilt boolean, OUT marks bigint, OUT days integer)
LANGUAGE plpgsql AS $fn$
DECLARE
    st      rollup_state%ROWTYPE;
    v_days  date[];
    v_null  boolean;
    v_agents text[];
    v_lo    timestamptz[];
    v_hi    timestamptz[];
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
    -- Autovacuum never sees a temporary table: without this, every plan below would guess
    -- its size and contents.
    ANALYZE rollup_calls_now;

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
    -- call from it, followed within the window. In one pass over the calls of the time the
    -- recomputed days and the window after them cover (v_lo, v_hi: disjoint ranges), those
    -- of the numbers that missed a call: per number in time order, a missed call at `at` is
    -- returned when a callback or an answered call lies in (at, at + window] (timestamps
    -- are whole microseconds), and its attempts are the missed calls in [at, at + window].
    SELECT array_agg(g.lo ORDER BY g.lo), array_agg(g.hi ORDER BY g.lo) INTO v_lo, v_hi
      FROM (SELECT min(t.lo) AS lo, max(t.hi) AS hi
              FROM (SELECT s.lo, s.hi, count(*) FILTER (WHERE s.apart) OVER (ORDER BY s.lo) AS island
                      FROM (SELECT r.lo, r.hi,
                                   r.lo > max(r.hi) OVER (ORDER BY r.lo ROWS BETWEEN UNBOUNDED PRECEDING
                                                                           AND 1 PRECEDING) AS apart
                              FROM (SELECT (d.d::timestamp AT TIME ZONE zone) AS lo,
                                           ((d.d + 1)::timestamp AT TIME ZONE zone) + callback_window AS hi
                                      FROM unnest(v_days) AS d(d)) AS r) AS s) AS t
             GROUP BY t.island) AS g;

    INSERT INTO unreturned_missed
    SELECT m.call_sid, m.day, m.from_number, m.at, m.agent_email, m.virtual_number, w.attempts
      FROM (SELECT e.call_sid, e.missed,
                   count(*) FILTER (WHERE e.missed)
                       OVER (PARTITION BY e.num ORDER BY e.t
                             RANGE BETWEEN CURRENT ROW AND callback_window FOLLOWING) AS attempts,
                   count(*) FILTER (WHERE NOT e.missed)
                       OVER (PARTITION BY e.num ORDER BY e.t
                             RANGE BETWEEN interval '1 microsecond' FOLLOWING AND callback_window FOLLOWING) AS returns
              FROM (SELECT CASE WHEN c.call_type = 'outgoing' THEN c.to_number ELSE c.from_number END AS num,
                           c.started_at AS t, c.call_sid, callhippo_is_missed(c.call_type, c.status) AS missed
                      FROM unnest(v_lo, v_hi) AS r(lo, hi)
                      JOIN calls c ON c.started_at >= r.lo AND c.started_at <= r.hi
                     WHERE c.call_type = 'outgoing'
                        OR (c.call_type = 'incoming' AND c.status = 'completed')
                        OR callhippo_is_missed(c.call_type, c.status)
                    UNION ALL
                    SELECT CASE WHEN c.call_type = 'outgoing' THEN c.to_number ELSE c.from_number END,
                           c.logged_at, c.call_sid, callhippo_is_missed(c.call_type, c.status)
                      FROM unnest(v_lo, v_hi) AS r(lo, hi)
                      JOIN calls c ON c.started_at IS NULL AND c.logged_at >= r.lo AND c.logged_at <= r.hi
                     WHERE c.call_type = 'outgoing'
                        OR (c.call_type = 'incoming' AND c.status = 'completed')
                        OR callhippo_is_missed(c.call_type, c.status)) AS e
             WHERE e.num IN (SELECT n.from_number FROM rollup_calls_now n
                              WHERE callhippo_is_missed(n.call_type, n.status) AND n.from_number IS NOT NULL
                                AND n.at IS NOT NULL)) AS w
      JOIN rollup_calls_now m ON m.call_sid = w.call_sid
     WHERE w.missed AND w.returns = 0;

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
COMMENT ON FUNCTION callhippo_rollup(text, integer, interval) IS 'Brings the summary tables up to date with calls and sms (see migrations V6 and V7).';

