-- V8: what the operator console (docs/reference.md §10) reads fast on a history of any size.
-- Never edit this file once applied: add a new V<n>__*.sql instead.

-- The last refused deliveries: refusals are rare, so without it "the last 50" would walk
-- the whole raw_events_last_received_at_idx. Partial: accepted deliveries never enter it.
CREATE INDEX raw_events_rejected_idx ON raw_events (last_received_at) WHERE error IS NOT NULL;
COMMENT ON INDEX raw_events_rejected_idx IS 'The latest refused deliveries, for the operator console.';
