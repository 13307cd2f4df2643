-- V4: where each row came from, the columns of newer call payloads (extraParams) and of
-- CallHippo's API, and the record of each synchronisation with that API.
-- Adding a column with a constant default rewrites nothing (PostgreSQL 11 and later); the
-- CHECKs read each table once. call_history gains the new columns at its end, so that it is
-- replaced in place and keeps its privileges.
-- Never edit this file once applied: add a new V<n>__*.sql instead.

ALTER TABLE calls
    ADD COLUMN agent_id       text,
    ADD COLUMN campaign_id    text,
    ADD COLUMN crm_unique_id  text,
    ADD COLUMN virtual_number text,
    ADD COLUMN answered_at    timestamptz,
    ADD COLUMN api_id         text,
    ADD COLUMN source         text NOT NULL DEFAULT 'webhook' CHECK (source IN ('webhook', 'api'));
ALTER TABLE sms
    ADD COLUMN source text NOT NULL DEFAULT 'webhook' CHECK (source IN ('webhook', 'api'));
ALTER TABLE raw_events
    ADD COLUMN source text NOT NULL DEFAULT 'webhook' CHECK (source IN ('webhook', 'api'));

COMMENT ON COLUMN calls.agent_id IS 'CallHippo''s id of the agent (extraParams.agentId, newer payloads).';
COMMENT ON COLUMN calls.campaign_id IS 'Dialer campaign of the call (extraParams.campaignId, newer payloads).';
COMMENT ON COLUMN calls.crm_unique_id IS 'The CRM''s id of the call (extraParams.crmUniqueId, newer payloads).';
COMMENT ON COLUMN calls.virtual_number IS 'The CallHippo number the call used (extraParams.virtualNumber, newer payloads).';
COMMENT ON COLUMN calls.answered_at IS 'When the call was answered, UTC (callAnswerTime of CallHippo''s API; webhooks do not send it).';
COMMENT ON COLUMN calls.api_id IS 'CallHippo''s record id of the call in its API (_id); NULL until the API has listed it.';
COMMENT ON COLUMN calls.source IS 'Where the row''s first values came from: webhook, or api (a call the webhooks missed, filled in from CallHippo''s API).';
COMMENT ON COLUMN sms.source IS 'Where the row''s first values came from: webhook, or api (read from CallHippo''s API).';
COMMENT ON COLUMN raw_events.source IS 'webhook (a delivery to the webhook) or api (a record read from CallHippo''s API).';

CREATE OR REPLACE VIEW call_history AS
SELECT c.call_sid, c.call_type, c.from_number, c.to_number, c.dial_code, c.country_name,
       c.status, c.status_reason, c.duration_seconds, c.ring_seconds, c.billed_minutes,
       c.call_charge, c.logged_at, c.started_at, c.ended_at, c.agent_email, c.agent_name,
       c.admin_email, c.note, c.recording_url, c.answered_device, c.hangup_by, c.call_queue,
       c.reason, c.dispositions, c.received_at, c.updated_at, c.parse_warnings,
       COALESCE((SELECT array_agg(t.name ORDER BY t.name)
                   FROM call_tags ct JOIN tags t ON t.id = ct.tag_id
                  WHERE ct.call_sid = c.call_sid), '{}'::text[]) AS tags,
       (SELECT s.status
          FROM call_status s
         WHERE s.call_sid = c.call_sid
         ORDER BY s.occurred_at DESC, s.id DESC
         LIMIT 1) AS last_status,
       c.agent_id, c.campaign_id, c.crm_unique_id, c.virtual_number, c.answered_at, c.api_id,
       c.source
  FROM calls c;

COMMENT ON COLUMN call_history.agent_id IS 'CallHippo''s id of the agent (newer payloads).';
COMMENT ON COLUMN call_history.campaign_id IS 'Dialer campaign of the call (newer payloads).';
COMMENT ON COLUMN call_history.crm_unique_id IS 'The CRM''s id of the call (newer payloads).';
COMMENT ON COLUMN call_history.virtual_number IS 'The CallHippo number the call used (newer payloads).';
COMMENT ON COLUMN call_history.answered_at IS 'When the call was answered, UTC (from CallHippo''s API).';
COMMENT ON COLUMN call_history.api_id IS 'CallHippo''s record id of the call in its API.';
COMMENT ON COLUMN call_history.source IS 'webhook, or api for a call the webhooks missed.';

CREATE TABLE sync_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('call', 'sms')),
    trigger     text        NOT NULL CHECK (trigger IN ('backfill', 'reconcile')),
    range_from  date        NOT NULL,
    range_to    date        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text        NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'succeeded', 'failed')),
    pages       integer     NOT NULL DEFAULT 0,
    records     integer     NOT NULL DEFAULT 0,
    inserted    integer     NOT NULL DEFAULT 0,
    filled      integer     NOT NULL DEFAULT 0,
    unchanged   integer     NOT NULL DEFAULT 0,
    rejected    integer     NOT NULL DEFAULT 0,
    error       text
);
CREATE INDEX sync_runs_kind_started_at_idx ON sync_runs (kind, started_at);

COMMENT ON TABLE sync_runs IS 'One row per kind per run of a synchronisation with CallHippo''s API (backfill or reconciliation).';
COMMENT ON COLUMN sync_runs.id IS 'Surrogate key.';
COMMENT ON COLUMN sync_runs.kind IS 'What was read: call (call logs) or sms (SMS logs).';
COMMENT ON COLUMN sync_runs.trigger IS 'backfill (the command) or reconcile (the periodic run inside serve).';
COMMENT ON COLUMN sync_runs.range_from IS 'First day read, in the account''s time zone (CALLHIPPO_TIMEZONE).';
COMMENT ON COLUMN sync_runs.range_to IS 'Last day read, in the account''s time zone.';
COMMENT ON COLUMN sync_runs.started_at IS 'When the run started (UTC).';
COMMENT ON COLUMN sync_runs.finished_at IS 'When it ended (UTC); NULL while it runs.';
COMMENT ON COLUMN sync_runs.status IS 'running, succeeded (every page read) or failed (see error).';
COMMENT ON COLUMN sync_runs.pages IS 'Pages of the API read.';
COMMENT ON COLUMN sync_runs.records IS 'Records the pages held.';
COMMENT ON COLUMN sync_runs.inserted IS 'Rows inserted: calls or messages the webhooks had missed.';
COMMENT ON COLUMN sync_runs.filled IS 'Rows already there whose empty columns the API record filled.';
COMMENT ON COLUMN sync_runs.unchanged IS 'Records that changed nothing.';
COMMENT ON COLUMN sync_runs.rejected IS 'Records that could not be read (no callSid): kept in raw_events with the error, written to no table.';
COMMENT ON COLUMN sync_runs.error IS 'What went wrong, quoting what the API answered; NULL on success.';

DO $grant$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'callhippo_reader') THEN
        GRANT SELECT ON sync_runs TO callhippo_reader;
    END IF;
END
$grant$;
