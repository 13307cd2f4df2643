-- callhippo-ingest: a SQL cookbook for dashboards (docs/reference.md §6).
-- Every statement here is run by the test suite (tests/api/views.rs) on the README's "Try it"
-- examples, and returns rows for them unless its comment says why not.
-- Connect as the read-only role:  psql "postgres://callhippo_reader:…@host:5432/callhippo"
--
-- What each costs is written above it, as measured by `bench/history` on a seeded year of a
-- 200-agent account (2 million calls; figures in bench/README.md). Two kinds of query:
--   * over the statistics views (call_daily_stats, agent_daily_stats, sms_daily_stats,
--     callcenter_daily_stats, agents, unreturned_missed_calls): they read summary tables, a
--     few rows per day, and cost milliseconds however many years the tables hold;
--   * over the base tables, always with a time range on started_at (its index): they cost in
--     proportion to the calls in the range, not to the whole history.
-- Days are in the report's zone (REPORT_TIMEZONE): compare them with callhippo_today(), today
-- in that zone (current_date is the session's, often UTC). The zone is in rollup_state.zone,
-- so a query over the base tables can use the same days: AT TIME ZONE (SELECT zone FROM rollup_state).

-- 1. Calls per day for the last 30 days, by direction and status.
--    Cost: summary rows of 30 days: about 1 ms.
SELECT day, call_type, status, calls, talk_seconds, total_charge
  FROM call_daily_stats
 WHERE day > callhippo_today() - 30
 ORDER BY day DESC, call_type, status;

-- 2. Missed-call rate by agent (missed or no_answer among their calls), last 30 days.
--    Cost: summary rows of 30 days: about 2 ms.
SELECT agent_email,
       sum(calls)                                            AS calls,
       sum(missed)                                           AS missed,
       round(100.0 * sum(missed) / NULLIF(sum(calls), 0), 1) AS missed_pct
  FROM agent_daily_stats
 WHERE day > callhippo_today() - 30
 GROUP BY agent_email
 ORDER BY missed_pct DESC NULLS LAST;

-- 3. Average handle time (talk seconds per completed call) by agent and day, last 30 days.
--    Cost: summary rows of 30 days: about 2 ms.
SELECT day,
       agent_email,
       completed,
       round(talk_seconds::numeric / NULLIF(completed, 0), 1) AS avg_handle_seconds
  FROM agent_daily_stats
 WHERE day > callhippo_today() - 30
 ORDER BY day DESC, agent_email;

-- 4. The call centre's day, account-wide, last 30 days: answer rate, speed of answer,
--    service level, missed calls nobody returned.
--    Cost: one summary row a day: about 1 ms.
SELECT day, incoming, answered, missed,
       round(100 * answer_rate, 1)           AS answer_pct,
       round(avg_speed_of_answer_seconds, 1) AS asa_seconds,
       round(100 * service_level, 1)         AS service_level_pct,
       outgoing,
       round(avg_handle_seconds, 1)          AS aht_seconds,
       unreturned_missed
  FROM callcenter_daily_stats
 WHERE agent_email IS NULL AND day > callhippo_today() - 30
 ORDER BY day DESC;

-- 5. Service level by agent this week.
--    Cost: summary rows of 7 days: about 1 ms.
SELECT agent_email,
       sum(incoming)                                                     AS incoming,
       round(100.0 * sum(answered) / NULLIF(sum(incoming), 0), 1)        AS answer_pct,
       round(100.0 * sum(unreturned_missed) / NULLIF(sum(missed), 0), 1) AS unreturned_pct
  FROM callcenter_daily_stats
 WHERE agent_email IS NOT NULL AND day > callhippo_today() - 7
 GROUP BY agent_email
 ORDER BY answer_pct NULLS LAST;

-- 6. This morning's list: missed callers still waiting for a call back (oldest first): those
--    of the last CALLBACK_WINDOW.
--    Cost: the index on missed_at, the window's rows only: about 1 ms.
--    No rows for the README's examples: their call was answered.
SELECT caller_number, missed_at, waiting, attempts, agent_email, virtual_number
  FROM unreturned_missed_calls
 WHERE missed_at > now() - (SELECT callback_window FROM rollup_state)
 ORDER BY missed_at
 LIMIT 500;

-- 7. Daily totals for a dashboard: calls, talk time and cost per day and status.
--    Cost: summary rows of the period: about 1 ms a month.
SELECT day, status, sum(calls) AS calls, sum(talk_seconds) AS talk_seconds, sum(total_charge) AS cost
  FROM call_daily_stats
 WHERE day > callhippo_today() - 90
 GROUP BY day, status
 ORDER BY day DESC, status;

-- 8. Agents: who was active when, with their call and SMS counts.
--    Cost: one row an agent: under 1 ms.
SELECT agent_email, agent_name, first_activity, last_activity, calls, sms
  FROM agents
 ORDER BY last_activity DESC;

-- 9. SMS per day and status, last 30 days.
--    Cost: summary rows of 30 days: under 1 ms.
SELECT day, sms_type, status, messages, total_charge
  FROM sms_daily_stats
 WHERE day > callhippo_today() - 30
 ORDER BY day DESC;

-- 10. The newest 100 calls with a given tag, with all their tags: a tag test through call_tags
--     (its primary key), never an array built for every call. PostgreSQL walks the calls
--     newest first and stops at the 100th match, or, for a rare tag, starts from the tag's
--     calls (call_tags' tag_id index).
--     Cost: about 5 ms for a tag on 3 % of the calls.
SELECT c.call_sid, c.started_at, c.status,
       ARRAY(SELECT t.name FROM call_tags ct JOIN tags t ON t.id = ct.tag_id
              WHERE ct.call_sid = c.call_sid ORDER BY t.name) AS tags
  FROM calls c
 WHERE c.started_at IS NOT NULL
   AND EXISTS (SELECT FROM call_tags ct JOIN tags t ON t.id = ct.tag_id
                WHERE ct.call_sid = c.call_sid AND t.name = 'VIP')
 ORDER BY c.started_at DESC
 LIMIT 100;

-- 11. Call volume by hour of the day (in the report's zone), last 30 days, by direction.
--     Cost: base table, the calls of 30 days through the started_at index: about 170k rows
--     on the seeded year, 100-200 ms. Keep the range short; for longer periods use the
--     daily views.
SELECT date_part('hour', started_at AT TIME ZONE (SELECT zone FROM rollup_state)) AS hour,
       call_type,
       count(*)                                                                   AS calls
  FROM calls
 WHERE started_at >= now() - interval '30 days'
 GROUP BY 1, 2
 ORDER BY 1, 2;

-- 12. Cost by country, this month (exact sums of callCharge).
--     Cost: base table, the calls of the month through the started_at index (as 11).
SELECT COALESCE(country_name, '(unknown)') AS country,
       count(*)                            AS calls,
       sum(call_charge)                    AS total_charge,
       sum(billed_minutes)                 AS billed_minutes
  FROM calls
 WHERE started_at >= date_trunc('month', now())
 GROUP BY 1
 ORDER BY total_charge DESC NULLS LAST;

-- 13. Status timeline of one call (the README's example call), in the order things happened
--     (not the order they arrived).
--     Cost: the call_status index on call_sid: under 1 ms.
SELECT s.occurred_at,
       s.status,
       s.agent_email,
       s.occurred_at - lag(s.occurred_at) OVER (ORDER BY s.occurred_at, s.id) AS since_previous
  FROM call_status s
 WHERE s.call_sid = 'CA1001'
 ORDER BY s.occurred_at, s.id;

-- 14. Calls of the last 7 days whose fields could not all be read, and why (fix the reader,
--     then `callhippo-ingest replay` fills the columns and clears the warnings).
--     Cost: base table, the calls of 7 days (as 11).
--     No rows for the README's examples: every field of theirs can be read.
SELECT call_sid, started_at, parse_warnings
  FROM calls
 WHERE started_at >= now() - interval '7 days' AND parse_warnings IS NOT NULL
 ORDER BY started_at DESC
 LIMIT 50;
