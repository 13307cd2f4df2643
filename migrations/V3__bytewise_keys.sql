-- V3: the text keys of the write path compare bytewise (COLLATE "C").
-- Every row written is compared against B-tree keys: call_sid (calls, call_tags,
-- call_status), the numbers and agent email of calls, sms_key. Under a libc or ICU locale
-- each comparison goes through the collation (strcoll); under "C" it is a memcmp. Measured on
-- PostgreSQL 15 here, a random call_sid into a B-tree of 300k keys: 5.6 µs under "C", 7.1 under
-- C.UTF-8, 7.5 under ICU en-US; each event makes four to six such inserts or lookups. Sorting by
-- these columns is then by code point, as it already was under C.UTF-8; add a COLLATE to a
-- query for another order. The views read these columns, so they are made again exactly as
-- in V2, with the privileges they had (a BI role's SELECT included); the altered columns'
-- statistics are gathered again. If another object depends on them (a view of your own), or
-- the migrating role does not own them all, nothing here changes, and a warning says so. The ALTERs rebuild the indexes of calls, call_tags, call_status and sms
-- while holding their locks: on tables of millions of rows the upgrade takes a few seconds
-- per million rows, and writes wait for it.
DO $v3$
DECLARE
    -- The views' privileges, as GRANT statements to run again once they are made again.
    grants text[] := ARRAY(
        SELECT format('GRANT %s ON %I TO %s%s', a.privilege_type, c.relname,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                           ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                      CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.relnamespace = to_regnamespace(current_schema())
           AND c.relname IN ('call_history', 'call_daily_stats', 'agent_daily_stats',
                             'sms_daily_stats', 'agents')
           AND a.grantee <> c.relowner);
    g text;
BEGIN
    DROP VIEW call_history, call_daily_stats, agent_daily_stats, sms_daily_stats, agents;

    ALTER TABLE calls
        ALTER COLUMN call_sid    TYPE text COLLATE "C",
        ALTER COLUMN from_number TYPE text COLLATE "C",
        ALTER COLUMN to_number   TYPE text COLLATE "C",
        ALTER COLUMN agent_email TYPE text COLLATE "C";
    ALTER TABLE call_tags
        ALTER COLUMN call_sid TYPE text COLLATE "C";
    ALTER TABLE call_status
        ALTER COLUMN call_sid TYPE text COLLATE "C",
        ALTER COLUMN status   TYPE text COLLATE "C";
    ALTER TABLE sms
        ALTER COLUMN sms_key TYPE text COLLATE "C";

        CREATE VIEW call_history AS
        SELECT c.*,
               COALESCE((SELECT array_agg(t.name ORDER BY t.name)
                           FROM call_tags ct JOIN tags t ON t.id = ct.tag_id
                          WHERE ct.call_sid = c.call_sid), '{}'::text[]) AS tags,
               (SELECT s.status
                  FROM call_status s
                 WHERE s.call_sid = c.call_sid
                 ORDER BY s.occurred_at DESC, s.id DESC
                 LIMIT 1) AS last_status
          FROM calls c;

        COMMENT ON VIEW call_history IS 'One row per call: every calls column, its tags and its latest status event.';
        COMMENT ON COLUMN call_history.call_sid IS 'CallHippo''s unique id of the call (callSid).';
        COMMENT ON COLUMN call_history.call_type IS 'incoming or outgoing.';
        COMMENT ON COLUMN call_history.from_number IS 'Calling number as sent.';
        COMMENT ON COLUMN call_history.to_number IS 'Called number as sent.';
        COMMENT ON COLUMN call_history.dial_code IS 'Country dialling code without +, as text.';
        COMMENT ON COLUMN call_history.country_name IS 'Name of the calling country.';
        COMMENT ON COLUMN call_history.status IS 'Call outcome: completed, missed, rejected, voicemail, welcome_message, ivr_message, unavailable, cancelled, no_answer, or another vendor value.';
        COMMENT ON COLUMN call_history.status_reason IS 'Why the call ended in its status (newer payloads).';
        COMMENT ON COLUMN call_history.duration_seconds IS 'Talk time in seconds.';
        COMMENT ON COLUMN call_history.ring_seconds IS 'Ringing time before answer, in seconds.';
        COMMENT ON COLUMN call_history.billed_minutes IS 'Minutes billed by CallHippo.';
        COMMENT ON COLUMN call_history.call_charge IS 'Charge for the call in the account''s currency, exact.';
        COMMENT ON COLUMN call_history.logged_at IS 'When CallHippo created the call log, UTC.';
        COMMENT ON COLUMN call_history.started_at IS 'When the call started, UTC.';
        COMMENT ON COLUMN call_history.ended_at IS 'When the call ended, UTC.';
        COMMENT ON COLUMN call_history.agent_email IS 'Email of the agent, lowercased.';
        COMMENT ON COLUMN call_history.agent_name IS 'Name of the agent.';
        COMMENT ON COLUMN call_history.admin_email IS 'Email of the CallHippo account owner, lowercased.';
        COMMENT ON COLUMN call_history.note IS 'Call notes written by the agent.';
        COMMENT ON COLUMN call_history.recording_url IS 'URL of the call recording.';
        COMMENT ON COLUMN call_history.answered_device IS 'Device that answered: web, ios, android.';
        COMMENT ON COLUMN call_history.hangup_by IS 'Who hung up: agent or client.';
        COMMENT ON COLUMN call_history.call_queue IS 'Whether the call went through a call queue.';
        COMMENT ON COLUMN call_history.reason IS 'Why the call was not set up or failed.';
        COMMENT ON COLUMN call_history.dispositions IS 'Dispositions chosen by the agent.';
        COMMENT ON COLUMN call_history.received_at IS 'When this service first wrote the call (UTC).';
        COMMENT ON COLUMN call_history.updated_at IS 'When this service last changed the call (UTC).';
        COMMENT ON COLUMN call_history.parse_warnings IS 'Payload fields that could not be read, mapped to what was wrong.';
        COMMENT ON COLUMN call_history.tags IS 'The call''s tags, sorted; empty when it has none.';
        COMMENT ON COLUMN call_history.last_status IS 'Status of the call''s latest status event by occurred_at; NULL when none arrived.';

        CREATE VIEW call_daily_stats AS
        SELECT (COALESCE(started_at, logged_at) AT TIME ZONE 'UTC')::date AS day,
               call_type,
               status,
               count(*)              AS calls,
               sum(duration_seconds) AS talk_seconds,
               sum(billed_minutes)   AS billed_minutes,
               sum(call_charge)      AS total_charge
          FROM calls
         GROUP BY 1, 2, 3;

        COMMENT ON VIEW call_daily_stats IS 'Calls per UTC day (of started_at, else logged_at), call type and status.';
        COMMENT ON COLUMN call_daily_stats.day IS 'UTC day of the call''s start (or of its log when the start is unknown).';
        COMMENT ON COLUMN call_daily_stats.call_type IS 'incoming or outgoing.';
        COMMENT ON COLUMN call_daily_stats.status IS 'Call outcome.';
        COMMENT ON COLUMN call_daily_stats.calls IS 'Number of calls.';
        COMMENT ON COLUMN call_daily_stats.talk_seconds IS 'Total talk time, in seconds.';
        COMMENT ON COLUMN call_daily_stats.billed_minutes IS 'Total billed minutes.';
        COMMENT ON COLUMN call_daily_stats.total_charge IS 'Total charge, in the account''s currency.';

        CREATE VIEW agent_daily_stats AS
        SELECT (COALESCE(started_at, logged_at) AT TIME ZONE 'UTC')::date AS day,
               agent_email,
               count(*)                                                AS calls,
               count(*) FILTER (WHERE status = 'completed')            AS completed,
               count(*) FILTER (WHERE status IN ('missed', 'no_answer')) AS missed,
               sum(duration_seconds)                                   AS talk_seconds,
               sum(billed_minutes)                                     AS billed_minutes
          FROM calls
         GROUP BY 1, 2;

        COMMENT ON VIEW agent_daily_stats IS 'Calls per UTC day (of started_at, else logged_at) and agent.';
        COMMENT ON COLUMN agent_daily_stats.day IS 'UTC day of the call''s start (or of its log when the start is unknown).';
        COMMENT ON COLUMN agent_daily_stats.agent_email IS 'Email of the agent, lowercased; NULL for calls without one.';
        COMMENT ON COLUMN agent_daily_stats.calls IS 'Number of calls.';
        COMMENT ON COLUMN agent_daily_stats.completed IS 'Number of calls with status completed.';
        COMMENT ON COLUMN agent_daily_stats.missed IS 'Number of calls with status missed or no_answer.';
        COMMENT ON COLUMN agent_daily_stats.talk_seconds IS 'Total talk time, in seconds.';
        COMMENT ON COLUMN agent_daily_stats.billed_minutes IS 'Total billed minutes.';

        CREATE VIEW sms_daily_stats AS
        SELECT (logged_at AT TIME ZONE 'UTC')::date AS day,
               sms_type,
               status,
               count(*)        AS messages,
               sum(sms_charge) AS total_charge
          FROM sms
         GROUP BY 1, 2, 3;

        COMMENT ON VIEW sms_daily_stats IS 'SMS messages per UTC day of logged_at, type and status.';
        COMMENT ON COLUMN sms_daily_stats.day IS 'UTC day the message was logged.';
        COMMENT ON COLUMN sms_daily_stats.sms_type IS 'incoming or outgoing.';
        COMMENT ON COLUMN sms_daily_stats.status IS 'Delivery status.';
        COMMENT ON COLUMN sms_daily_stats.messages IS 'Number of messages.';
        COMMENT ON COLUMN sms_daily_stats.total_charge IS 'Total charge, in the account''s currency.';

        CREATE VIEW agents AS
        WITH activity AS (
            SELECT agent_email, agent_name, COALESCE(started_at, logged_at) AS at, 1 AS is_call, 0 AS is_sms
              FROM calls
             WHERE agent_email IS NOT NULL
            UNION ALL
            SELECT agent_email, agent_name, logged_at, 0, 1
              FROM sms
             WHERE agent_email IS NOT NULL
        )
        SELECT agent_email,
               (array_agg(agent_name ORDER BY at DESC NULLS LAST)
                    FILTER (WHERE agent_name IS NOT NULL))[1] AS agent_name,
               min(at)      AS first_activity,
               max(at)      AS last_activity,
               sum(is_call) AS calls,
               sum(is_sms)  AS sms
          FROM activity
         GROUP BY agent_email;

        COMMENT ON VIEW agents IS 'One row per agent email seen on a call or an SMS.';
        COMMENT ON COLUMN agents.agent_email IS 'Email of the agent, lowercased.';
        COMMENT ON COLUMN agents.agent_name IS 'The agent''s name on their latest call or SMS that had one.';
        COMMENT ON COLUMN agents.first_activity IS 'Earliest call start (or log time) or SMS time, UTC.';
        COMMENT ON COLUMN agents.last_activity IS 'Latest call start (or log time) or SMS time, UTC.';
        COMMENT ON COLUMN agents.calls IS 'Number of calls.';
        COMMENT ON COLUMN agents.sms IS 'Number of SMS messages.';

    FOREACH g IN ARRAY grants LOOP
        EXECUTE g;
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'callhippo_reader') THEN
        GRANT SELECT ON call_history, call_daily_stats, agent_daily_stats, sms_daily_stats, agents
            TO callhippo_reader;
    END IF;

    -- Changing a column's collation drops its statistics, and no row changed to make
    -- autovacuum gather them again.
    ANALYZE calls, call_tags, call_status, sms;
EXCEPTION
    WHEN dependent_objects_still_exist OR feature_not_supported OR insufficient_privilege
         OR duplicate_column THEN
    RAISE WARNING 'text keys keep the database''s collation (writes are slower under a linguistic one): %. To apply it later, remove the cause and run this block of migrations/V3__bytewise_keys.sql with psql.', SQLERRM;
END
$v3$;
