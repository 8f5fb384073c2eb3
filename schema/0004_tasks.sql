-- Tasks: the `tasks` read model (a projection of task.* events) and the scheduler's placements.

-- Read model: one row per task (projection `tasks`).
CREATE TABLE tasks (
  id              uuid        PRIMARY KEY,
  version         bigint      NOT NULL DEFAULT 0,  -- of the task's stream, last applied
  name            text        NOT NULL DEFAULT '',
  state           text        NOT NULL DEFAULT 'queued',  -- partial upserts omit it
  priority        int         NOT NULL DEFAULT 0,
  submitted_position bigint,                       -- FIFO within a priority
  cpu_millis      bigint,
  memory_bytes    bigint,
  gpus            int,
  labels          jsonb,
  spec            jsonb,
  submitted_by    text,
  submitted_at    timestamptz,
  attempt         int         NOT NULL DEFAULT 0,
  node            text,
  gpu_indices     jsonb,
  waiting_reason  text,
  assigned_at     timestamptz,
  queued_ms       bigint,
  cancel_reason   text,
  finished_at     timestamptz,
  updated_at      timestamptz
);
CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_queue ON tasks (priority DESC, submitted_position) WHERE state IN ('queued', 'cancelling');
CREATE INDEX tasks_submitted_at ON tasks (submitted_at);

-- The scheduler's placements: a pass inserts the row in the transaction that appends the
-- task.assigned event, so the next pass (any copy; passes take turns on an advisory lock) sees
-- the capacity taken at once, whatever the projections' lag. Only passes write it; a row goes
-- when its task has ended. Free capacity of a node = declared minus the sum of its rows.
CREATE TABLE scheduler_placements (
  task_id       uuid        PRIMARY KEY,
  attempt       int         NOT NULL,
  node          text        NOT NULL,
  cpu_millis    bigint      NOT NULL,
  memory_bytes  bigint      NOT NULL,
  gpu_indices   int[]       NOT NULL DEFAULT '{}',
  placed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduler_placements_node ON scheduler_placements (node);
