-- V1: the tables of CONTRACT §4, with their keys and the indexes the usual queries need
-- (calls by start time, by agent and time, by number; status events by call; SMS by time).
-- Every index costs each insert: none is here that no usual query needs.
-- Never edit this file once applied: add a new V<n>__*.sql instead.

CREATE TABLE raw_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL
                     CHECK (kind IN ('call', 'sms', 'call_status', 'test', 'unknown', 'invalid')),
    body_sha256      bytea       NOT NULL UNIQUE,
    payload          jsonb,
    body             text,
    body_bytes       bytea,
    content_type     text,
    error            text,
    received_at      timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL,
    deliveries       integer     NOT NULL DEFAULT 1 CHECK (deliveries > 0)
);
CREATE INDEX raw_events_last_received_at_idx ON raw_events (last_received_at);

COMMENT ON TABLE raw_events IS 'Every authenticated webhook delivery, kept before anything else: the source of replay. Identical bytes make one row.';
COMMENT ON COLUMN raw_events.id IS 'Surrogate key.';
COMMENT ON COLUMN raw_events.kind IS 'What the body was read as: call, sms, call_status, test (the vendor''s connection test), unknown (valid JSON of another kind) or invalid (not a JSON object).';
COMMENT ON COLUMN raw_events.body_sha256 IS 'SHA-256 of the body''s bytes as received; identical bytes are one row.';
COMMENT ON COLUMN raw_events.payload IS 'The body as JSON (form bodies as an object of their fields); NULL when the body was not JSON.';
COMMENT ON COLUMN raw_events.body IS 'The body''s text as received, when payload does not give it back exactly: not JSON, form fields, or JSON that held characters or numbers jsonb cannot store.';
COMMENT ON COLUMN raw_events.body_bytes IS 'The exact bytes of the body, only when body (text) cannot hold them: invalid UTF-8 or NUL bytes.';
COMMENT ON COLUMN raw_events.content_type IS 'The Content-Type header of the first delivery.';
COMMENT ON COLUMN raw_events.error IS 'Why the event was rejected (HTTP 400 or 422); NULL when it was accepted.';
COMMENT ON COLUMN raw_events.received_at IS 'When these bytes were first received (UTC).';
COMMENT ON COLUMN raw_events.last_received_at IS 'When these bytes were last received (UTC); replay applies rows in this order.';
COMMENT ON COLUMN raw_events.deliveries IS 'How many times these exact bytes arrived (count).';

CREATE TABLE calls (
    call_sid         text PRIMARY KEY CHECK (call_sid <> ''),
    call_type        text,
    from_number      text,
    to_number        text,
    dial_code        text,
    country_name     text,
    status           text,
    status_reason    text,
    duration_seconds integer,
    ring_seconds     integer,
    billed_minutes   integer,
    call_charge      numeric,
    logged_at        timestamptz,
    started_at       timestamptz,
    ended_at         timestamptz,
    agent_email      text,
    agent_name       text,
    admin_email      text,
    note             text,
    recording_url    text,
    answered_device  text,
    hangup_by        text,
    call_queue       boolean,
    reason           text,
    dispositions     text[],
    received_at      timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    parse_warnings   jsonb
);
CREATE INDEX calls_started_at_idx ON calls (started_at);
CREATE INDEX calls_agent_email_started_at_idx ON calls (agent_email, started_at);
CREATE INDEX calls_from_number_idx ON calls (from_number);
CREATE INDEX calls_to_number_idx ON calls (to_number);

COMMENT ON TABLE calls IS 'One row per call (callSid): the newest delivery of the call''s log from CallHippo.';
COMMENT ON COLUMN calls.call_sid IS 'CallHippo''s unique id of the call (callSid).';
COMMENT ON COLUMN calls.call_type IS 'incoming or outgoing (callType, normalized: lowercase, _ for spaces and -).';
COMMENT ON COLUMN calls.from_number IS 'Calling number as sent (from, or fromNumber in newer payloads).';
COMMENT ON COLUMN calls.to_number IS 'Called number as sent (to, or toNumber in newer payloads).';
COMMENT ON COLUMN calls.dial_code IS 'Country dialling code without + (dialCode), as text.';
COMMENT ON COLUMN calls.country_name IS 'Name of the calling country (countryName).';
COMMENT ON COLUMN calls.status IS 'Call outcome (status, normalized): completed, missed, rejected, voicemail, welcome_message, ivr_message, unavailable, cancelled, no_answer, or another vendor value.';
COMMENT ON COLUMN calls.status_reason IS 'Why the call ended in its status (statusReason, newer payloads).';
COMMENT ON COLUMN calls.duration_seconds IS 'Talk time in seconds (durationSeconds, else duration MM:SS or HH:MM:SS).';
COMMENT ON COLUMN calls.ring_seconds IS 'Ringing time before answer, in seconds (ringAnswerDuration).';
COMMENT ON COLUMN calls.billed_minutes IS 'Minutes billed by CallHippo (billedMinutes).';
COMMENT ON COLUMN calls.call_charge IS 'Charge for the call in the account''s currency, exact (callCharge).';
COMMENT ON COLUMN calls.logged_at IS 'When CallHippo created the call log (time), UTC.';
COMMENT ON COLUMN calls.started_at IS 'When the call started (startTime), UTC.';
COMMENT ON COLUMN calls.ended_at IS 'When the call ended (endTime), UTC.';
COMMENT ON COLUMN calls.agent_email IS 'Email of the CallHippo user who made or took the call (email), lowercased.';
COMMENT ON COLUMN calls.agent_name IS 'Name of the CallHippo user who made or took the call (callerName).';
COMMENT ON COLUMN calls.admin_email IS 'Email of the CallHippo account owner (adminEmail), lowercased.';
COMMENT ON COLUMN calls.note IS 'Call notes written by the agent (note).';
COMMENT ON COLUMN calls.recording_url IS 'URL of the call recording (recordingUrl).';
COMMENT ON COLUMN calls.answered_device IS 'Device that answered: web, ios, android (answeredDevice, normalized).';
COMMENT ON COLUMN calls.hangup_by IS 'Who hung up: agent or client (hangupBy, normalized).';
COMMENT ON COLUMN calls.call_queue IS 'Whether the call went through a call queue (callQueue).';
COMMENT ON COLUMN calls.reason IS 'Why the call was not set up or failed (reason).';
COMMENT ON COLUMN calls.dispositions IS 'Dispositions chosen by the agent (dispositions, newer payloads), trimmed, empty ones dropped.';
COMMENT ON COLUMN calls.received_at IS 'When this service first wrote the row (UTC).';
COMMENT ON COLUMN calls.updated_at IS 'When this service last changed the row (UTC).';
COMMENT ON COLUMN calls.parse_warnings IS 'Payload fields that could not be read, mapped to what was wrong; their columns are NULL. NULL when there are none.';

CREATE TABLE tags (
    id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name <> '')
);
COMMENT ON TABLE tags IS 'Tag names agents put on calls, one row per distinct name (case kept).';
COMMENT ON COLUMN tags.id IS 'Surrogate key.';
COMMENT ON COLUMN tags.name IS 'The tag as written by the agent, trimmed.';

-- No foreign keys: the writer inserts a link only for a call and a tag it has just written
-- in the same transaction, and the per-row checks of foreign keys cost as much as the rest
-- of the link's insert. Nothing deletes calls or tags.
CREATE TABLE call_tags (
    call_sid text    NOT NULL,
    tag_id   integer NOT NULL,
    PRIMARY KEY (call_sid, tag_id)
);
CREATE INDEX call_tags_tag_id_idx ON call_tags (tag_id);
COMMENT ON TABLE call_tags IS 'Which tags a call has: exactly those of its newest delivery.';
COMMENT ON COLUMN call_tags.call_sid IS 'The call (calls.call_sid).';
COMMENT ON COLUMN call_tags.tag_id IS 'The tag (tags.id).';

CREATE TABLE sms (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sms_key        text        NOT NULL UNIQUE,
    sms_type       text,
    from_number    text        NOT NULL,
    to_number      text        NOT NULL,
    status         text,
    content        text,
    logged_at      timestamptz NOT NULL,
    sms_charge     numeric,
    agent_email    text,
    agent_name     text,
    admin_email    text,
    received_at    timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    parse_warnings jsonb
);
CREATE INDEX sms_logged_at_idx ON sms (logged_at);

COMMENT ON TABLE sms IS 'One row per SMS message logged by CallHippo.';
COMMENT ON COLUMN sms.id IS 'Surrogate key.';
COMMENT ON COLUMN sms.sms_key IS 'SHA-256 (hex) of from, to, smsType, time and content as read: CallHippo gives an SMS no id, so a redelivery finds its row by this key.';
COMMENT ON COLUMN sms.sms_type IS 'incoming or outgoing (smsType, normalized).';
COMMENT ON COLUMN sms.from_number IS 'Sending number as sent (from).';
COMMENT ON COLUMN sms.to_number IS 'Receiving number as sent (to).';
COMMENT ON COLUMN sms.status IS 'Delivery status (status, normalized).';
COMMENT ON COLUMN sms.content IS 'The message text (content).';
COMMENT ON COLUMN sms.logged_at IS 'When CallHippo logged the message (time), UTC.';
COMMENT ON COLUMN sms.sms_charge IS 'Charge for the message in the account''s currency, exact (smsCharge).';
COMMENT ON COLUMN sms.agent_email IS 'Email of the agent (email), lowercased.';
COMMENT ON COLUMN sms.agent_name IS 'Name of the agent who sent it (smsSendBy).';
COMMENT ON COLUMN sms.admin_email IS 'Email of the CallHippo account owner (adminEmail), lowercased.';
COMMENT ON COLUMN sms.received_at IS 'When this service first wrote the row (UTC).';
COMMENT ON COLUMN sms.updated_at IS 'When this service last changed the row (UTC).';
COMMENT ON COLUMN sms.parse_warnings IS 'Payload fields that could not be read, mapped to what was wrong; NULL when there are none.';

CREATE TABLE call_status (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_sid       text        NOT NULL CHECK (call_sid <> ''),
    status         text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    call_type      text,
    from_number    text,
    to_number      text,
    agent_email    text,
    agent_id       text,
    dial_code      text,
    received_at    timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    parse_warnings jsonb,
    -- Also the index for a call's status events (the usual query, and call_history's).
    UNIQUE (call_sid, status, occurred_at)
);

COMMENT ON TABLE call_status IS 'One row per call status notification. Not tied to calls by a foreign key: status events usually arrive before the call''s log. Order by occurred_at, never by arrival.';
COMMENT ON COLUMN call_status.id IS 'Surrogate key.';
COMMENT ON COLUMN call_status.call_sid IS 'The call the event is about (callSid); matches calls.call_sid once the call''s log has arrived.';
COMMENT ON COLUMN call_status.status IS 'The call''s status at that moment (status, normalized), e.g. ringing, answered, completed.';
COMMENT ON COLUMN call_status.occurred_at IS 'When the status was reached (dateTime), UTC.';
COMMENT ON COLUMN call_status.call_type IS 'incoming or outgoing (callType, normalized).';
COMMENT ON COLUMN call_status.from_number IS 'Calling number (fromNumber).';
COMMENT ON COLUMN call_status.to_number IS 'Called number (toNumber).';
COMMENT ON COLUMN call_status.agent_email IS 'Email of the agent (agentEmail), lowercased.';
COMMENT ON COLUMN call_status.agent_id IS 'CallHippo''s id of the agent (agentId).';
COMMENT ON COLUMN call_status.dial_code IS 'Country dialling code without + (dialCode), as text.';
COMMENT ON COLUMN call_status.received_at IS 'When this service first wrote the row (UTC).';
COMMENT ON COLUMN call_status.updated_at IS 'When this service last changed the row (UTC).';
COMMENT ON COLUMN call_status.parse_warnings IS 'Payload fields that could not be read, mapped to what was wrong; NULL when there are none.';
