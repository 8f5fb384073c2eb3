-- Nodes: credentials (written with their events), the durable liveness row (refreshed by
-- heartbeats, which are not events) and the `nodes` read model (a projection of node.* events).

-- Written in the same transaction as node.registered / node.token_revoked (outbox), so a token
-- works the moment `unidesk nodes add` returns. Only the SHA-256 of a token is stored.
CREATE TABLE node_credentials (
  node          text        PRIMARY KEY,
  token_sha256  text        NOT NULL UNIQUE,
  labels        jsonb       NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz
);

-- One row per node that ever connected. Heartbeats refresh last_seen_at in place (DESIGN §3);
-- the monitor reads it to decide transitions, which it records as events.
CREATE TABLE node_liveness (
  node          text        PRIMARY KEY REFERENCES node_credentials (node),
  session_id    uuid,                     -- the live session; NULL when none
  ingress_id    text,                     -- the ingress copy holding it
  connected_at  timestamptz,
  last_seen_at  timestamptz NOT NULL,
  health        jsonb       NOT NULL DEFAULT '{}',
  status        text        NOT NULL,     -- online | suspect | offline | dormant | revoked
  status_since  timestamptz NOT NULL
);

-- Read model: one row per registered node (projection `nodes`).
CREATE TABLE nodes (
  name             text        PRIMARY KEY,
  status           text        NOT NULL DEFAULT 'registered',  -- partial upserts omit it
  status_since     timestamptz,
  status_reason    text,
  labels           jsonb,
  resources        jsonb,
  health           jsonb,
  runtimes         jsonb,
  agent_version    text,
  protocol_version int,
  session_id       uuid,
  connected_since  timestamptz,
  registered_at    timestamptz,
  revoked_at       timestamptz
);
CREATE INDEX nodes_status ON nodes (status);
