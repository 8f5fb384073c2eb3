-- Task execution: what the `tasks` read model shows of the latest attempt (phases, timings,
-- exit code, failure class and blame).

ALTER TABLE tasks
  ADD COLUMN phase          text,         -- preparing: git or build
  ADD COLUMN accepted_at    timestamptz,
  ADD COLUMN started_at     timestamptz,  -- the container started
  ADD COLUMN image          text,
  ADD COLUMN code_fetched   boolean,
  ADD COLUMN env_fetched    boolean,
  ADD COLUMN image_built    boolean,
  ADD COLUMN git_ms         bigint,
  ADD COLUMN build_ms       bigint,
  ADD COLUMN prepare_ms     bigint,
  ADD COLUMN run_ms         bigint,
  ADD COLUMN exit_code      int,
  ADD COLUMN failure_class  text,         -- exit, start, git, build, runtime, timeout, lost
  ADD COLUMN blame          text,         -- task | infrastructure
  ADD COLUMN reason         text;         -- why the latest attempt ended as it did

