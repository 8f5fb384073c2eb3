-- Token rotation without downtime: `unidesk nodes rotate` issues a new token and keeps the
-- previous one valid until previous_valid_until, so the agent can be restarted with the new
-- token at leisure. Written in the same transaction as node.token_rotated.
ALTER TABLE node_credentials
  ADD COLUMN previous_token_sha256 text UNIQUE,
  ADD COLUMN previous_valid_until  timestamptz,
  ADD COLUMN rotated_at            timestamptz;
