-- Audit read model: who did what to which subject, when, in which correlation.

CREATE TABLE audit_log (
  position       bigint      PRIMARY KEY,
  recorded_at    timestamptz NOT NULL,
  actor          text        NOT NULL,
  action         text        NOT NULL,
  subject        text        NOT NULL,
  correlation_id text        NOT NULL,
  causation_id   text        NOT NULL,
  source         text        NOT NULL,
  event_id       uuid        NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, recorded_at);
CREATE INDEX audit_log_subject ON audit_log (subject, recorded_at);
CREATE INDEX audit_log_correlation ON audit_log (correlation_id);
