-- The queue's protocol (spec/fleet.md#the-queue): claim with SKIP LOCKED and a lease, renew, report back.
-- Every write a machine makes to a claimed task names the attempt it holds (the fencing token); a write
-- naming an older attempt changes nothing and returns nothing, so the machine learns it lost the task.
-- SECURITY INVOKER: row-level security applies to machine roles (003_security.sql).

-- Claim up to p_limit tasks for p_system: queued ones, and claimed ones whose lease expired (their holder
-- stopped its agent before that: spec/fleet.md#never-two-live-agents). p_capacity maps each project this
-- system has a clone of to the free slots it has for it; other projects are never claimed.
CREATE FUNCTION ccm.claim(p_system text, p_labels jsonb, p_capacity jsonb, p_limit integer, p_lease_s double precision)
    RETURNS SETOF ccm.tasks
    LANGUAGE plpgsql AS $$
DECLARE
    cand record;
    t ccm.tasks;
    used jsonb := '{}';
    n integer := 0;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    -- Candidates are read without locks, then locked one by one with SKIP LOCKED: a claimer locks only
    -- what it takes, so two machines claiming at once never hide tasks from each other.
    FOR cand IN
        SELECT c.id, c.project FROM ccm.tasks c
         WHERE (c.state = 'queued' OR (c.state IN ('claimed', 'starting', 'running') AND c.lease_until < now()))
           AND (c.on_system IS NULL OR c.on_system = p_system)
           AND p_labels @> c.labels
           AND p_capacity ? c.project
         ORDER BY c.priority DESC, c.created_at, c.id
         LIMIT greatest(p_limit * 4, 16)
    LOOP
        CONTINUE WHEN (p_capacity ->> cand.project)::integer <= coalesce((used ->> cand.project)::integer, 0);
        SELECT * INTO t FROM ccm.tasks c
         WHERE c.id = cand.id
           AND (c.state = 'queued' OR (c.state IN ('claimed', 'starting', 'running') AND c.lease_until < now()))
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        IF t.state <> 'queued' AND t.cancel_requested_at IS NOT NULL THEN
            UPDATE ccm.tasks SET state = 'cancelled',
                   reason = format('cancelled; the lease of %s (attempt %s) expired at %s', t.claimed_by, t.attempt, t.lease_until)
             WHERE id = t.id;
            CONTINUE;
        END IF;
        IF t.state <> 'queued' AND t.attempt >= t.max_attempts THEN
            UPDATE ccm.tasks SET state = 'failed',
                   reason = format('the lease of %s (attempt %s of %s) expired at %s; no attempts left',
                                   t.claimed_by, t.attempt, t.max_attempts, t.lease_until)
             WHERE id = t.id;
            CONTINUE;
        END IF;
        UPDATE ccm.tasks
           SET state = 'claimed', attempt = t.attempt + 1, claimed_by = p_system, claimed_at = now(),
               lease_until = now() + make_interval(secs => p_lease_s),
               reason = CASE WHEN t.state = 'queued' THEN NULL
                             ELSE format('the lease of %s (attempt %s) expired at %s', t.claimed_by, t.attempt, t.lease_until) END,
               local_id = NULL, session_id = NULL, session_state = NULL, result = NULL
         WHERE id = t.id
        RETURNING * INTO t;
        RETURN NEXT t;
        used := jsonb_set(used, ARRAY[t.project], to_jsonb(coalesce((used ->> t.project)::integer, 0) + 1));
        n := n + 1;
        EXIT WHEN n >= p_limit;
    END LOOP;
END $$;

-- Extend the leases p_system still holds, all in one round trip. A task missing from the result is lost
-- (another attempt took it, it was finished, or its lease already expired): its agent must stop.
CREATE FUNCTION ccm.renew(p_system text, p_ids text[], p_attempts integer[], p_lease_s double precision)
    RETURNS TABLE (task_id text, attempt integer, lease_until timestamptz, cancel_requested boolean)
    LANGUAGE sql AS $$
    UPDATE ccm.tasks AS t
       SET lease_until = now() + make_interval(secs => p_lease_s)
      FROM unnest(p_ids, p_attempts) AS h(id, attempt)
     WHERE t.id = h.id AND t.attempt = h.attempt AND t.claimed_by = p_system
       AND t.state IN ('claimed', 'starting', 'running') AND t.lease_until >= now()
    RETURNING t.id, t.attempt, t.lease_until, t.cancel_requested_at IS NOT NULL
$$;

-- Report attempt p_attempt's progress or end: starting, running, done, failed, cancelled, or queued (give
-- it back: the next claim is a new attempt; with no attempts left it fails instead). p_fields may hold
-- local_id, session_id, session_state and result. Returns the state written, or NULL when the attempt is
-- stale or the task already ended otherwise: nothing was changed.
CREATE FUNCTION ccm.report(p_system text, p_id text, p_attempt integer, p_state text, p_reason text, p_fields jsonb)
    RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    t ccm.tasks;
    new_state text := p_state;
BEGIN
    IF p_state NOT IN ('starting', 'running', 'done', 'failed', 'cancelled', 'queued') THEN
        RAISE EXCEPTION 'ccm.report: % is not a state a machine reports', p_state USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO t FROM ccm.tasks c
     WHERE c.id = p_id AND c.attempt = p_attempt AND c.claimed_by = p_system FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- stale: another attempt holds it, or the task is gone
    END IF;
    IF t.state IN ('done', 'failed', 'cancelled') THEN
        RETURN CASE WHEN t.state = p_state THEN t.state END;  -- a repeated report is harmless
    END IF;
    -- Progress needs a live lease; an end (or giving it back) is accepted as long as no newer attempt
    -- exists, even after the lease expired: the work it reports was done under the lease.
    IF p_state IN ('starting', 'running') AND (t.lease_until IS NULL OR t.lease_until < now()) THEN
        RETURN NULL;
    END IF;
    IF p_state = 'queued' AND t.attempt >= t.max_attempts THEN
        new_state := 'failed';
    END IF;
    IF p_state = 'queued' AND t.cancel_requested_at IS NOT NULL THEN
        new_state := 'cancelled';
    END IF;
    UPDATE ccm.tasks
       SET state = new_state,
           reason = coalesce(p_reason, CASE WHEN new_state = state THEN reason END),
           local_id = coalesce(p_fields ->> 'local_id', local_id),
           session_id = coalesce(p_fields ->> 'session_id', session_id),
           session_state = coalesce(p_fields ->> 'session_state', session_state),
           result = coalesce(p_fields -> 'result', result)
     WHERE id = t.id;
    RETURN new_state;
END $$;

-- Cancel a task from any machine (or SQL): a queued one at once; a claimed one is asked to stop (its
-- holder hears it through NOTIFY or its next renewal, ends its agent and reports cancelled). Returns the
-- task's state afterwards, or NULL if there is no such task.
CREATE FUNCTION ccm.cancel(p_id text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s text;
BEGIN
    UPDATE ccm.tasks SET state = 'cancelled', reason = format('cancelled by %s before it was claimed', session_user)
     WHERE id = p_id AND state = 'queued'
    RETURNING state INTO s;
    IF FOUND THEN
        RETURN s;
    END IF;
    UPDATE ccm.tasks SET cancel_requested_at = coalesce(cancel_requested_at, now())
     WHERE id = p_id AND state IN ('claimed', 'starting', 'running')
    RETURNING state INTO s;
    IF FOUND THEN
        RETURN s;
    END IF;
    SELECT state INTO s FROM ccm.tasks WHERE id = p_id;
    RETURN s;
END $$;
