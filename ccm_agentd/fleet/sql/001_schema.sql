-- The fleet's tables (spec/fleet.md). Applied once by `ccm-agentd fleet init`, in one transaction with the
-- other pending migrations, under an advisory lock. Forward-only: never edit this file once released; add
-- a new one.

-- Names of systems, projects, labels and tasks: safe as file names, role names and in messages.
CREATE FUNCTION ccm.valid_name(name text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    RETURN name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$';

-- One row: this fleet's identity. A machine keeps its shipping cursors per fleet_id, so pointing it at
-- another database ships everything again instead of skipping what the old one had.
CREATE TABLE ccm.meta (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fleet_id   uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ccm.meta DEFAULT VALUES;

-- One row per machine, upserted by its ccm-agentd at start and every heartbeat.
CREATE TABLE ccm.systems (
    system       text PRIMARY KEY CHECK (ccm.valid_name(system)),
    labels       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    projects     text[] NOT NULL DEFAULT '{}',
    version      text,
    max_agents   integer,
    agents       integer,                      -- fleet tasks it holds now
    health       jsonb NOT NULL DEFAULT '{}',  -- shipping backlog and lag, connection facts
    started_at   timestamptz,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Every session's status file, upserted (never moves back: a row only takes a status with a seq >= its).
CREATE TABLE ccm.sessions (
    system     text NOT NULL REFERENCES ccm.systems ON DELETE CASCADE,
    session_id text NOT NULL,
    seq        bigint NOT NULL,
    state      text,
    project    text,
    cwd        text,
    task_id    text,
    updated_at timestamptz,
    status     jsonb NOT NULL,
    shipped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (system, session_id)
);
CREATE INDEX sessions_updated_at ON ccm.sessions (updated_at DESC);

-- Every record of every session's log, once: re-sending one is harmless (ON CONFLICT DO NOTHING).
-- No foreign key to sessions: events of a batch are written before its status, and a key check per
-- record would halve the catch-up rate.
CREATE TABLE ccm.events (
    system     text NOT NULL,
    session_id text NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz,
    event      text NOT NULL,
    record     jsonb NOT NULL,
    shipped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (system, session_id, seq)
);
CREATE INDEX events_ts ON ccm.events (ts);

-- The shared queue. A row with only a prompt and a project is a valid task.
CREATE FUNCTION ccm.new_task_id() RETURNS text
    LANGUAGE sql VOLATILE
    RETURN 'f' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 11);

CREATE TABLE ccm.tasks (
    id                  text PRIMARY KEY DEFAULT ccm.new_task_id() CHECK (ccm.valid_name(id)),
    prompt              text NOT NULL CHECK (prompt <> ''),
    project             text NOT NULL CHECK (ccm.valid_name(project)),
    name                text,
    priority            integer NOT NULL DEFAULT 0,
    on_system           text,                     -- only this system may claim it
    labels              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),  -- a claimer's labels contain these
    options             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'), -- the local task's options
    max_attempts        integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'claimed', 'starting', 'running', 'done', 'failed', 'cancelled')),
    reason              text,
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),  -- the fencing token
    claimed_by          text,
    claimed_at          timestamptz,
    lease_until         timestamptz,
    local_id            text,
    session_id          text,
    session_state       text,
    result              jsonb,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text NOT NULL DEFAULT current_user,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE INDEX tasks_queued ON ccm.tasks (priority DESC, created_at, id) WHERE state = 'queued';
CREATE INDEX tasks_leased ON ccm.tasks (lease_until) WHERE state IN ('claimed', 'starting', 'running');
CREATE INDEX tasks_claimed_by ON ccm.tasks (claimed_by) WHERE state IN ('claimed', 'starting', 'running');

-- The audit trail: one row per change of state or attempt, written by a trigger whoever made the change.
CREATE TABLE ccm.task_transitions (
    id         bigserial PRIMARY KEY,
    task_id    text NOT NULL REFERENCES ccm.tasks ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    from_state text,
    to_state   text NOT NULL,
    attempt    integer NOT NULL,
    system     text,
    reason     text,
    by_role    text NOT NULL
);
CREATE INDEX task_transitions_task ON ccm.task_transitions (task_id, id);

CREATE FUNCTION ccm.tasks_stamp() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.state IN ('done', 'failed', 'cancelled') THEN
        NEW.finished_at := coalesce(NEW.finished_at, now());
        NEW.lease_until := NULL;
    ELSE
        NEW.finished_at := NULL;
    END IF;
    IF NEW.state = 'queued' THEN
        NEW.lease_until := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_stamp BEFORE INSERT OR UPDATE ON ccm.tasks
    FOR EACH ROW EXECUTE FUNCTION ccm.tasks_stamp();

-- SECURITY DEFINER: machines may not write transitions themselves (the trail cannot be forged), and
-- session_user names the role that made the change.
CREATE FUNCTION ccm.tasks_record() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state OR NEW.attempt IS DISTINCT FROM OLD.attempt THEN
        INSERT INTO ccm.task_transitions (task_id, from_state, to_state, attempt, system, reason, by_role)
        VALUES (NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, NEW.state, NEW.attempt, NEW.claimed_by,
                NEW.reason, session_user);
    END IF;
    -- Wake every listening machine: a task became claimable, or one is to be cancelled.
    IF NEW.state = 'queued' AND (TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM 'queued') THEN
        PERFORM pg_notify('ccm_tasks', json_build_object('event', 'queued', 'id', NEW.id,
                          'project', NEW.project, 'on', NEW.on_system)::text);
    ELSIF TG_OP = 'UPDATE' AND NEW.cancel_requested_at IS NOT NULL AND OLD.cancel_requested_at IS NULL THEN
        PERFORM pg_notify('ccm_tasks', json_build_object('event', 'cancel', 'id', NEW.id,
                          'system', NEW.claimed_by)::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_record AFTER INSERT OR UPDATE ON ccm.tasks
    FOR EACH ROW EXECUTE FUNCTION ccm.tasks_record();
