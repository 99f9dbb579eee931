-- Least privilege (spec/supabase.md): one login role per machine, a member of ccm_machine, that can write
-- only its own rows; ccm_reader, which can read everything and write nothing (a dashboard). The role that
-- ran `fleet init` owns the tables and is not bound by these policies (a single-DSN fleet just uses it).
-- Roles are global to the cluster: a second ccm database on the same server shares the two group roles.

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ccm_machine') THEN
        CREATE ROLE ccm_machine NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- created meanwhile by another database's init
END $$;

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ccm_reader') THEN
        CREATE ROLE ccm_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Which login role is which machine. Read by the policies; written only by create_machine_role (or by
-- hand, by the owner).
CREATE TABLE ccm.machine_roles (
    role   name PRIMARY KEY,
    system text NOT NULL UNIQUE CHECK (ccm.valid_name(system))
);

-- The system the current role may act as; NULL for any other role (the owner, a reader).
CREATE FUNCTION ccm.my_system() RETURNS text
    LANGUAGE sql STABLE
    RETURN (SELECT m.system FROM ccm.machine_roles m WHERE m.role = current_user);

-- Make (or update) the login role for one machine: `SELECT ccm.create_machine_role('laptop')`, then set
-- its password with psql's \password (a password passed here may end up in the server's statement log).
-- Needs CREATEROLE (Supabase's postgres role has it). Returns the role's name.
CREATE FUNCTION ccm.create_machine_role(p_system text, p_password text DEFAULT NULL, p_role text DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    r text := coalesce(p_role, 'ccm_m_' || lower(regexp_replace(p_system, '[^A-Za-z0-9_]', '_', 'g')));
    other text;
BEGIN
    IF NOT ccm.valid_name(p_system) THEN
        RAISE EXCEPTION 'ccm: % is not a system name (letters, digits, _ . -, at most 63)', p_system;
    END IF;
    SELECT system INTO other FROM ccm.machine_roles WHERE role = r;
    IF other IS NOT NULL AND other <> p_system THEN
        RAISE EXCEPTION 'ccm: role % already acts as system %; pass another role name', r, other;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', r);
    END IF;
    IF p_password IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', r, p_password);
    END IF;
    EXECUTE format('GRANT ccm_machine TO %I', r);
    DELETE FROM ccm.machine_roles WHERE system = p_system AND role <> r;
    INSERT INTO ccm.machine_roles (role, system) VALUES (r, p_system) ON CONFLICT (role) DO NOTHING;
    RETURN r;
END $$;

REVOKE ALL ON SCHEMA ccm FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA ccm FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ccm FROM PUBLIC;
GRANT USAGE ON SCHEMA ccm TO ccm_machine, ccm_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA ccm TO ccm_machine, ccm_reader;
GRANT INSERT, UPDATE ON ccm.systems, ccm.sessions TO ccm_machine;
GRANT INSERT ON ccm.events TO ccm_machine;
GRANT INSERT, UPDATE ON ccm.tasks TO ccm_machine;
GRANT EXECUTE ON FUNCTION ccm.valid_name(text), ccm.new_task_id(), ccm.my_system() TO ccm_machine, ccm_reader;
GRANT EXECUTE ON FUNCTION ccm.claim(text, jsonb, jsonb, integer, double precision),
                          ccm.renew(text, text[], integer[], double precision),
                          ccm.report(text, text, integer, text, text, jsonb),
                          ccm.cancel(text)
    TO ccm_machine;

ALTER TABLE ccm.systems ENABLE ROW LEVEL SECURITY;
ALTER TABLE ccm.sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE ccm.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE ccm.tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE ccm.task_transitions ENABLE ROW LEVEL SECURITY;

-- Everyone with a ccm role sees the whole fleet: the view is the point.
CREATE POLICY read_all ON ccm.systems FOR SELECT TO ccm_machine, ccm_reader USING (true);
CREATE POLICY read_all ON ccm.sessions FOR SELECT TO ccm_machine, ccm_reader USING (true);
CREATE POLICY read_all ON ccm.events FOR SELECT TO ccm_machine, ccm_reader USING (true);
CREATE POLICY read_all ON ccm.tasks FOR SELECT TO ccm_machine, ccm_reader USING (true);
CREATE POLICY read_all ON ccm.task_transitions FOR SELECT TO ccm_machine, ccm_reader USING (true);

-- A machine writes only its own system, sessions and events.
CREATE POLICY own_insert ON ccm.systems FOR INSERT TO ccm_machine WITH CHECK (system = ccm.my_system());
CREATE POLICY own_update ON ccm.systems FOR UPDATE TO ccm_machine
    USING (system = ccm.my_system()) WITH CHECK (system = ccm.my_system());
CREATE POLICY own_insert ON ccm.sessions FOR INSERT TO ccm_machine WITH CHECK (system = ccm.my_system());
CREATE POLICY own_update ON ccm.sessions FOR UPDATE TO ccm_machine
    USING (system = ccm.my_system()) WITH CHECK (system = ccm.my_system());
CREATE POLICY own_insert ON ccm.events FOR INSERT TO ccm_machine WITH CHECK (system = ccm.my_system());

-- Tasks: any machine may queue one (as queued, unclaimed); it may update only tasks it holds, or ones it
-- can claim (queued, or a lease that expired). What an update may change is checked by tasks_guard.
CREATE POLICY add ON ccm.tasks FOR INSERT TO ccm_machine
    WITH CHECK (state = 'queued' AND attempt = 0 AND claimed_by IS NULL AND cancel_requested_at IS NULL);
CREATE POLICY held_or_claimable ON ccm.tasks FOR UPDATE TO ccm_machine
    USING (claimed_by = ccm.my_system() OR state = 'queued'
           OR (state IN ('claimed', 'starting', 'running') AND lease_until < now()))
    WITH CHECK (ccm.my_system() IS NOT NULL);

-- The protocol, enforced for machine roles whatever SQL they send: what a task asks is not theirs to
-- change; the attempt (fencing token) grows only by a claim of a claimable task; a task another machine
-- holds is not theirs to write; a finished task stays finished.
CREATE FUNCTION ccm.tasks_guard() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    me text := ccm.my_system();
    claimable boolean := OLD.state = 'queued'
        OR (OLD.state IN ('claimed', 'starting', 'running') AND OLD.lease_until < now());
BEGIN
    IF me IS NULL THEN
        RETURN NEW;  -- the owner or an admin: not a machine
    END IF;
    IF (NEW.id, NEW.prompt, NEW.project, NEW.name, NEW.priority, NEW.on_system, NEW.labels, NEW.options,
        NEW.max_attempts, NEW.created_at, NEW.created_by, NEW.cancel_requested_at)
       IS DISTINCT FROM
       (OLD.id, OLD.prompt, OLD.project, OLD.name, OLD.priority, OLD.on_system, OLD.labels, OLD.options,
        OLD.max_attempts, OLD.created_at, OLD.created_by, OLD.cancel_requested_at) THEN
        RAISE EXCEPTION 'ccm: % may not change what task % asks (use ccm.cancel to cancel it)', me, OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.attempt = OLD.attempt + 1 THEN
        IF claimable AND NEW.claimed_by = me AND NEW.state = 'claimed' THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'ccm: task % is not claimable by %', OLD.id, me USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.attempt <> OLD.attempt THEN
        RAISE EXCEPTION 'ccm: task %: an attempt number only grows by one, by a claim', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.claimed_by = me AND NEW.claimed_by = me THEN
        IF OLD.state IN ('done', 'failed', 'cancelled') AND NEW.state IS DISTINCT FROM OLD.state THEN
            RAISE EXCEPTION 'ccm: task % already ended (%)', OLD.id, OLD.state USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    -- Closing a task whose holder's lease expired, when no attempt is left or it was cancelled (ccm.claim).
    IF claimable AND OLD.state <> 'queued' AND NEW.state IN ('failed', 'cancelled')
       AND NEW.claimed_by IS NOT DISTINCT FROM OLD.claimed_by THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'ccm: task % is held by %, not by %', OLD.id, coalesce(OLD.claimed_by, 'nobody'), me
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Trigger functions need no EXECUTE grant: privileges are checked when the trigger is created.
CREATE TRIGGER tasks_guard BEFORE UPDATE ON ccm.tasks
    FOR EACH ROW EXECUTE FUNCTION ccm.tasks_guard();
