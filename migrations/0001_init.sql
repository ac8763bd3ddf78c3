-- The coordinator's first schema (DESIGN.md §4). Applied once, in one transaction, by
-- ApplyMigrations (server/migrations.cc), which also records it in schema_migrations.
--
-- Protos are stored serialized (bytea); a column exists beside them only for what SQL must filter,
-- order or join on. Every timestamp comes from the database clock (now()), so several coordinators
-- agree on leases.
--
-- Lock order, followed by every transaction in server/pg_job_store.cc so that concurrent state
-- changes do not deadlock: jobs (by id) -> attempts -> assignments -> workers (by id).

CREATE TABLE jobs (
  id          text PRIMARY KEY,
  -- Creation order (ties in created_at broken): the queue and the listing order by it.
  seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  name        text NOT NULL DEFAULT '',
  -- The client's idempotency key; NULL when the client gave none (NULLs never collide).
  request_id  text UNIQUE,
  state       text NOT NULL
              CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
  -- RUNNING: the phase of the newest progress report of the running attempt.
  phase       text NOT NULL DEFAULT '',
  spec        bytea NOT NULL,  -- bpnas.v1.JobSpec, normalized
  device_kind text NOT NULL CHECK (device_kind IN ('CPU', 'GPU')),
  ranks       integer NOT NULL CHECK (ranks >= 1),
  budget      double precision NOT NULL,
  attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),  -- attempts started so far
  error       text NOT NULL DEFAULT '',
  result      bytea,   -- bpnas.v1.SearchResult, once SUCCEEDED
  artifact_id bigint,  -- blobs.id of the artifact, once SUCCEEDED (constraint below)
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()  -- last state change
);
-- The scheduler takes the oldest queued job first.
CREATE INDEX jobs_queued_by_creation ON jobs (seq) WHERE state = 'QUEUED';
-- ListJobs with a state filter, newest first (without a filter the UNIQUE index on seq serves).
CREATE INDEX jobs_by_state_newest_first ON jobs (state, seq DESC);

CREATE TABLE workers (
  id               text PRIMARY KEY,
  name             text NOT NULL DEFAULT '',
  device_kind      text NOT NULL CHECK (device_kind IN ('CPU', 'GPU')),
  threads          integer NOT NULL DEFAULT 0,
  metrics_address  text NOT NULL DEFAULT '',
  state            text NOT NULL CHECK (state IN ('IDLE', 'BUSY', 'LOST')),
  lease_expires_at timestamptz NOT NULL,
  registered_at    timestamptz NOT NULL DEFAULT now(),
  last_seen_at     timestamptz NOT NULL DEFAULT now()
);
-- Gang assignment looks for idle workers of one device kind.
CREATE INDEX workers_idle_by_kind ON workers (device_kind, id) WHERE state = 'IDLE';
-- ExpireLeases looks for live workers whose lease has run out.
CREATE INDEX workers_live_by_lease ON workers (lease_expires_at) WHERE state <> 'LOST';

CREATE TABLE attempts (
  job_id     text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt    integer NOT NULL CHECK (attempt >= 1),
  state      text NOT NULL
             CHECK (state IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'LOST')),
  world_size integer NOT NULL CHECK (world_size >= 1),
  error      text NOT NULL DEFAULT '',
  started_at timestamptz NOT NULL DEFAULT now(),
  ended_at   timestamptz,
  PRIMARY KEY (job_id, attempt)
);
-- A job runs at most one attempt at a time.
CREATE UNIQUE INDEX attempts_one_running_per_job ON attempts (job_id) WHERE state = 'RUNNING';

-- One row per rank of an attempt. `token` is the secret every write of that rank carries; the
-- assignment is active while its attempt runs.
CREATE TABLE assignments (
  token      text PRIMARY KEY,
  job_id     text NOT NULL,
  attempt    integer NOT NULL,
  rank       integer NOT NULL CHECK (rank >= 0),
  worker_id  text NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
  active     boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  ended_at   timestamptz,
  FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, attempt) ON DELETE CASCADE,
  UNIQUE (job_id, attempt, rank)
);
-- Heartbeat finds a worker's active assignment; a worker never holds two at once.
CREATE UNIQUE INDEX assignments_active_by_worker ON assignments (worker_id) WHERE active;

-- Progress reports of rank 0, stored once per (job, attempt, step). The primary key also serves
-- "progress of a job" (in (attempt, step) order) and "newest report of an attempt".
CREATE TABLE progress (
  job_id      text NOT NULL,
  attempt     integer NOT NULL,
  step        bigint NOT NULL,
  phase       text NOT NULL DEFAULT '',
  -- Set when a resumed attempt replaces these rows (rows past the checkpoint it resumed from).
  superseded  boolean NOT NULL DEFAULT false,
  reported_at timestamptz NOT NULL DEFAULT now(),
  body        bytea NOT NULL,  -- bpnas.v1.Progress as reported
  PRIMARY KEY (job_id, attempt, step),
  FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, attempt) ON DELETE CASCADE
);

-- Artifacts and checkpoints, stored as a sequence of chunks so that neither the coordinator nor a
-- single row ever holds a whole blob. A blob is visible to readers only once complete.
CREATE TABLE blobs (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind         text NOT NULL CHECK (kind IN ('ARTIFACT', 'CHECKPOINT')),
  job_id       text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt      integer NOT NULL,
  step         bigint NOT NULL DEFAULT 0,  -- checkpoints: the step it was taken at
  sha256       text NOT NULL DEFAULT '',   -- lowercase hex, set when complete
  total_bytes  bigint NOT NULL DEFAULT 0,  -- set when complete
  complete     boolean NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now(),
  completed_at timestamptz
);
-- The newest complete checkpoint of a job.
CREATE INDEX blobs_complete_checkpoints_by_job ON blobs (job_id, attempt DESC, step DESC, id DESC)
  WHERE kind = 'CHECKPOINT' AND complete;

CREATE TABLE blob_chunks (
  blob_id bigint NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
  seq     integer NOT NULL CHECK (seq >= 0),
  data    bytea NOT NULL,
  PRIMARY KEY (blob_id, seq)
);
-- Chunks are model weights and codes: they barely compress, so store them out of line without
-- trying (saves the compression attempt on every write and the decompression on every read).
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

ALTER TABLE jobs ADD CONSTRAINT jobs_artifact_fk FOREIGN KEY (artifact_id) REFERENCES blobs (id);
