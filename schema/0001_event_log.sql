-- The OA event bus: one append-only log, idempotency records and subscription checkpoints.

CREATE TABLE events (
  position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- Transaction id of the appending transaction: readers deliver in (tx_id, position) order and
  -- only below the oldest running transaction, so a late commit can never be skipped.
  tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
  stream_id      text        NOT NULL,
  stream_version bigint      NOT NULL CHECK (stream_version >= 0),
  event_id       uuid        NOT NULL UNIQUE,
  type           text        NOT NULL,
  schema_version integer     NOT NULL CHECK (schema_version >= 1),
  data           jsonb       NOT NULL,
  metadata       jsonb       NOT NULL,
  recorded_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_tx_order ON events (tx_id, position);
CREATE INDEX events_type ON events (type, position);

-- One row per idempotency key: a repeat with the same body returns these positions.
CREATE TABLE idempotency_keys (
  key            text        PRIMARY KEY,
  request_hash   text        NOT NULL,
  stream_id      text        NOT NULL,
  first_position bigint      NOT NULL,
  last_position  bigint      NOT NULL,
  last_version   bigint      NOT NULL,
  recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- Durable checkpoint of every subscription (projector or policy handler).
CREATE TABLE subscriptions (
  name       text        PRIMARY KEY,
  tx_id      xid8        NOT NULL DEFAULT '0',
  position   bigint      NOT NULL DEFAULT 0,
  events     bigint      NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);
