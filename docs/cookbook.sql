-- callhippo-ingest: a SQL cookbook over the views (docs/reference.md §6).
-- Every statement here is run by the test suite (tests/api/views.rs) on the README's "Try it"
-- examples, and returns rows for them unless its comment says why not.
-- Connect as the read-only role:  psql "postgres://callhippo_reader:…@host:5432/callhippo"
-- All times are timestamptz; `AT TIME ZONE` turns them into local clock time.

-- 1. Call volume by hour of the day (UTC), last 30 days, by direction.
SELECT date_part('hour', COALESCE(started_at, logged_at) AT TIME ZONE 'UTC') AS hour_utc,
       call_type,
       count(*)                                                          AS calls
  FROM call_history
 WHERE COALESCE(started_at, logged_at) >= now() - interval '30 days'
 GROUP BY 1, 2
 ORDER BY 1, 2;

-- 2. Missed-call rate by agent (missed or no_answer among incoming calls), last 30 days.
SELECT agent_email,
       sum(calls)                                               AS calls,
       sum(missed)                                              AS missed,
       round(100.0 * sum(missed) / NULLIF(sum(calls), 0), 1)    AS missed_pct
  FROM agent_daily_stats
 WHERE day >= current_date - 30
 GROUP BY agent_email
 ORDER BY missed_pct DESC NULLS LAST;

-- 3. Average handle time (talk seconds per completed call) by agent and day.
SELECT day,
       agent_email,
       completed,
       round(talk_seconds::numeric / NULLIF(completed, 0), 1) AS avg_handle_seconds
  FROM agent_daily_stats
 ORDER BY day DESC, agent_email;

-- 4. Cost by country, this month (exact sums of callCharge).
SELECT COALESCE(country_name, '(unknown)') AS country,
       count(*)                            AS calls,
       sum(call_charge)                    AS total_charge,
       sum(billed_minutes)                 AS billed_minutes
  FROM calls
 WHERE COALESCE(started_at, logged_at) >= date_trunc('month', now())
 GROUP BY 1
 ORDER BY total_charge DESC NULLS LAST;

-- 5. Status timeline of one call (the README's example call), in the order things happened
--    (not the order they arrived).
SELECT s.occurred_at,
       s.status,
       s.agent_email,
       s.occurred_at - lag(s.occurred_at) OVER (ORDER BY s.occurred_at, s.id) AS since_previous
  FROM call_status s
 WHERE s.call_sid = 'CA1001'
 ORDER BY s.occurred_at, s.id;

-- 6. Daily totals for a dashboard: calls, talk time and cost per day and status.
SELECT day, status, sum(calls) AS calls, sum(talk_seconds) AS talk_seconds, sum(total_charge) AS cost
  FROM call_daily_stats
 GROUP BY day, status
 ORDER BY day DESC, status;

-- 7. Calls with a given tag, with all their tags.
SELECT call_sid, started_at, status, tags
  FROM call_history
 WHERE 'VIP' = ANY (tags)
 ORDER BY started_at DESC;

-- 8. Rows whose fields could not all be read, and why (see parse_warnings; fix the reader,
--    then `callhippo-ingest replay` fills the columns and clears the warnings).
--    No rows for the README's examples: every field of theirs can be read.
SELECT call_sid, parse_warnings
  FROM calls
 WHERE parse_warnings IS NOT NULL
 ORDER BY updated_at DESC
 LIMIT 50;

-- 9. Agents: who was active when, with their call and SMS counts.
SELECT agent_email, agent_name, first_activity, last_activity, calls, sms
  FROM agents
 ORDER BY last_activity DESC;
