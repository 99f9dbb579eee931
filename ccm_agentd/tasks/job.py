"""The tasks job of ccm-agentd (the Job protocol of ccm_agentd/jobs.py): launches queued tasks, follows
each attempt through its session's status to done or failed, retries, cancels, closes windows.

Per wake-up it touches what changed: the task files named in the wake (plus, at a rescan, any whose file
changed), the live tasks (at most ``max_agents`` plus those waiting for a person), and the few done tasks
whose window is still open; the queued ones only when one could start. Finished tasks are kept but never
walked (two id sets index the others), so a wake costs the same with 5 or 5,000 finished tasks on disk.
Everything it must remember is in the task files; see spec/tasks.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ccm_agentd import panes
from ccm_agentd.jobs import Notify, Wake
from ccm_agentd.metrics import Metrics
from ccm_agentd.tasks import cleanup, config, monitor, results, scheduler, trust
from ccm_agentd.tasks.launcher import BY, Launcher, LaunchError, NeedsPerson
from ccm_hooks import paths
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import tasks, tasks_result
from ccm_hooks.statedir.timefmt import parse_ts

log = logging.getLogger("ccm_agentd.tasks")

TRUST_RECHECK_S = 10.0  # a headless task waiting for trust looks at ~/.claude.json this often
HEADLESS_POLL_S = 5.0  # a headless agent's exit is seen at its SessionEnd; this is the backstop
IDLE_CHECK_S = 30.0  # a live task with nothing due is looked at again this often (and at every rescan)
RETRY_AFTER_ERROR_S = 10.0


class TasksJob:
    name = "tasks"

    def __init__(self, root: str, tmux: panes.Tmux | None = None, notify: Notify | None = None) -> None:
        self.root = root
        self.notify: Notify = notify or (lambda *args, **facts: None)
        self.cfg = config.TasksConfig()
        self.launcher = Launcher(root, self.cfg)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.active: set[str] = set()  # ids of live tasks and of done ones whose window is open
        self.queued: set[str] = set()
        self.stamps: dict[str, tuple[int, int, int] | None] = {}
        self.loaded = False
        self.counts = {"launches": 0, "launch_failures": 0}
        self.finished: dict[str, list[float]] = {}  # final state -> [count, total seconds]
        self.due: dict[str, float] = {}  # task id -> when to look at it again without a change

    # --- the Job protocol ----------------------------------------------------------------------------

    def dirs(self) -> list[str]:
        return [tasks.tasks_dir(self.root)]

    def fileno(self) -> int | None:
        return None

    def configure(self, table: Mapping[str, Any]) -> None:
        self.cfg = config.from_table(table)
        self.launcher.configure(self.cfg)

    def wake(self, w: Wake) -> float | None:
        now = w.now
        touched = self._refresh(w)
        due: float | None = None

        def soon(when: float | None) -> None:
            nonlocal due
            if when is not None:
                due = when if due is None else min(due, when)

        for task in sorted((self.tasks[i] for i in self.active), key=tasks.order_key):
            # Only what changed: its file, its session, its own time; or everything at a rescan.
            attempt = tasks.current_attempt(task) or {}
            when = self.due.get(task["id"])
            if not (w.rescan or task["id"] in touched or attempt.get("session_id") in w.changed
                    or when is None or now >= when):  # fmt: skip
                soon(when)
                continue
            try:
                when = self._step(task, w)
            except Exception:
                log.exception("task %s: unexpected error", task.get("id"))
                when = now + RETRY_AFTER_ERROR_S
            self.due[task["id"]] = when if when is not None else now + IDLE_CHECK_S
            soon(self.due[task["id"]])
        limits = (self.cfg.max_agents, self.cfg.max_agents_per_project)
        candidates = [self.tasks[i] for i in self.active | self.queued] if self.queued else []
        for chosen in scheduler.pick(candidates, self.tasks, *limits, now):
            try:
                soon(self._launch(dict(chosen), now))
            except Exception:
                log.exception("task %s: unexpected error while launching", chosen.get("id"))
        for task_id in self.queued:
            if self.tasks[task_id].get("not_before"):
                soon(parse_ts(self.tasks[task_id].get("not_before")))
        if self.launcher.ending:
            soon(cleanup.finish_ending(self.launcher, now))
        return due

    def health(self) -> dict[str, Any]:
        return {"by_state": self.by_state(), **self.counts}

    def metrics(self, m: Metrics) -> None:
        m.clear_gauge("ccm_tasks")
        for state, n in {**dict.fromkeys(tasks.STATES, 0), **self.by_state()}.items():
            m.set_gauge("ccm_tasks", n, {"state": state}, help="Tasks by state.")
        _feed(m, "ccm_task_launches_total", self.counts["launches"], None, "Attempts launched.")
        _feed(m, "ccm_task_launch_failures_total", self.counts["launch_failures"], None,
              "Attempts that could not be launched.")  # fmt: skip
        for state, (count, seconds) in self.finished.items():
            _feed(m, "ccm_tasks_finished_total", count, {"state": state}, "Tasks that ended, by final state.")
            _feed(m, "ccm_task_duration_seconds_total", seconds, {"state": state},
                  "Summed duration of the tasks that ended (/ ccm_tasks_finished_total).")  # fmt: skip

    def close(self) -> None:
        self.launcher.close()

    def by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task in self.tasks.values():
            counts[str(task.get("state"))] = counts.get(str(task.get("state")), 0) + 1
        return counts

    # --- reading the task files ----------------------------------------------------------------------

    def _refresh(self, w: Wake) -> set[str]:
        """Reload the task files that changed; returns their ids."""
        names = w.names.get(tasks.tasks_dir(self.root), frozenset())
        touched: set[str] = set()
        if not self.loaded or w.rescan:
            ids = tasks.task_ids(self.root)
            for gone in set(self.tasks) - set(ids):
                self._put(gone, None)
            self.loaded = True
        else:
            ids = sorted({name.rpartition(".")[0] for name in names if name.endswith((".json", ".jsonl"))})
        for task_id in ids:
            if not paths.valid_session_id(task_id):
                continue
            stamp = _stamp(tasks.log_path(self.root, task_id))
            if task_id in self.tasks and stamp == self.stamps.get(task_id):
                continue
            task = tasks.load(self.root, task_id)
            self.stamps[task_id] = stamp
            touched.add(task_id)
            self._put(task_id, task)
        return touched

    def _put(self, task_id: str, task: dict[str, Any] | None) -> None:
        """The one place self.tasks changes, so the id sets stay true."""
        self.active.discard(task_id)
        self.queued.discard(task_id)
        if task is None:
            self.tasks.pop(task_id, None)
            return
        self.tasks[task_id] = task
        if task.get("state") in tasks.LIVE or _window_open(task):
            self.active.add(task_id)
        elif task.get("state") == "queued":
            self.queued.add(task_id)

    def _save(self, task: dict[str, Any]) -> dict[str, Any]:
        self._put(task["id"], task)
        self.stamps[task["id"]] = _stamp(tasks.log_path(self.root, task["id"]))
        self.due.pop(task["id"], None)  # changed: look at it again at the next wake-up
        return task

    def _ended(self, task: dict[str, Any]) -> None:
        """Count a task that just reached its final state (for metrics)."""
        if task.get("state") in tasks.FINAL:
            count, seconds = self.finished.get(task["state"], [0.0, 0.0])
            duration = float((task.get("result") or {}).get("duration_s") or 0)
            self.finished[task["state"]] = [count + 1, seconds + duration]

    # --- one task ------------------------------------------------------------------------------------

    def _launch(self, task: dict[str, Any], now: float) -> float | None:
        ending = set(self.launcher.ending)
        if any(a.get("pid") in ending for a in task.get("attempts") or []):
            return now + 0.5  # its previous agent is still ending: one live agent per task
        try:
            task = self._save(self.launcher.begin(task, now))
        except tasks.Conflict:
            return None  # cancelled meanwhile
        self.counts["launches"] += 1
        return self._proceed(task, now)

    def _proceed(self, task: dict[str, Any], now: float) -> float | None:
        """Carry a starting attempt forward; a failure to launch ends the attempt like any failure."""
        try:
            task = self._save(self.launcher.proceed(task, now))
        except NeedsPerson as exc:
            self._wait_for_person(task, str(exc))
            return now + TRUST_RECHECK_S
        except LaunchError as exc:
            self.counts["launch_failures"] += 1
            self._end(task, monitor.Verdict("failed", f"launch failed: {exc}"), now)
            return None
        # An agent adopted after a restart may have taken its prompt (and finished) while nobody watched.
        attempt = tasks.current_attempt(task) or {}
        if tasks_result.session_status(self.root, attempt.get("session_id")) is not None:
            return now
        return now + self.cfg.launch_timeout_s

    def _step(self, task: dict[str, Any], w: Wake) -> float | None:
        now = w.now
        state = task.get("state")
        attempt = tasks.current_attempt(task)
        if state == "done":
            new, when = cleanup.close_due(self.launcher, task, now)
            if new is not task:
                self._save(new)
            return when
        if attempt is None:
            return None
        if task.get("cancel"):
            self._ended(self._save(results.cancel(self.launcher, task, now, self.notify)))
            return None
        status = self._status(w, attempt)
        if state == "starting" and not attempt.get("launched_at"):
            return self._proceed(task, now)  # a restart found the launch half done
        if state in ("starting", "waiting"):
            return self._confirm(task, attempt, status, now)
        if task.get("headless"):
            exit_code = self.launcher.headless_exit(attempt)
            output = attempt.get("output")
            result = tasks_result.headless_result(output) if isinstance(output, str) else None
            verdict = monitor.assess_headless(task, result, exit_code, now)
            if verdict is None:
                return now + HEADLESS_POLL_S
        else:
            verdict = monitor.assess(task, status, now)
        if verdict is not None:
            self._end(task, verdict, now)
            return now  # again at once: a done task's window has its grace period to schedule
        timeout = task.get("timeout_s")
        since = parse_ts(attempt.get("confirmed_at")) or parse_ts(attempt.get("started_at"))
        return since + float(timeout) if isinstance(timeout, (int, float)) and since else None

    def _confirm(self, task: dict[str, Any], attempt: dict[str, Any], status: dict[str, Any] | None,
                 now: float) -> float | None:  # fmt: skip
        """starting/waiting -> running once the agent's first UserPromptSubmit is in its session's status."""
        prompts = int(((status or {}).get("counters") or {}).get("prompts") or 0)
        if prompts >= 1:
            self._save(tasks.change(self.root, task["id"], BY, to="running", expect=("starting", "waiting"),
                                    reason="the agent took its prompt (UserPromptSubmit)",
                                    attempt={"n": attempt["n"], "confirmed_at": iso_utc(now)}))  # fmt: skip
            return now
        if task.get("state") == "waiting" and task.get("headless"):
            if trust.trusted(str(task.get("workdir") or task["project"])):
                task = self._save(tasks.change(self.root, task["id"], BY, to="starting", expect=("waiting",),
                                               reason="the project is trusted now"))  # fmt: skip
                return self._proceed(task, now)
            return now + TRUST_RECHECK_S
        found = self.launcher.find(task, attempt)
        if found is None:
            if task.get("headless") and self.launcher.headless_exit(attempt) is None:
                return now + 1.0
            self.counts["launch_failures"] += 1
            self._end(
                task,
                monitor.Verdict(
                    "failed",
                    "launch failed: the agent exited before taking its prompt"
                    + self.launcher.exit_note(attempt),
                ),
                now,
            )
            return None
        launched = parse_ts(attempt.get("launched_at")) or now
        if now < launched + self.cfg.launch_timeout_s:
            return launched + self.cfg.launch_timeout_s
        if task.get("state") == "starting":
            shown = self.launcher.tmux.capture(found.pane_id) if not isinstance(found, int) else None
            if shown is not None and trust.shows_trust_dialog(shown):
                why = (f"Claude Code asks whether to trust {task['project']}: answer it yourself "
                       f"(ccm-hooks task attach {task['id']}); ccm never does")  # fmt: skip
            else:
                first = next((ln.strip() for ln in (shown or "").splitlines() if ln.strip()), "nothing")
                wait = self.cfg.launch_timeout_s
                why = f"no prompt taken {wait:g} s after launch; the pane shows {first[:120]}"
            self._wait_for_person(task, why)
        return now + TRUST_RECHECK_S

    def _wait_for_person(self, task: dict[str, Any], why: str) -> None:
        if task.get("state") == "waiting":
            return
        new = self._save(tasks.change(self.root, task["id"], BY, to="waiting", reason=why,
                                      expect=("starting",)))  # fmt: skip
        attempt = tasks.current_attempt(new) or {}
        self.notify("task_waiting", f"task:{new['id']}", f"task {new['id']} waits: {why}",
                    since=new.get("state_since"), state="waiting", reason=why, project=new.get("project"),
                    tmux_pane=attempt.get("pane"), tmux_socket=attempt.get("tmux_socket"))  # fmt: skip

    def _end(self, task: dict[str, Any], verdict: monitor.Verdict, now: float) -> None:
        try:
            self._ended(self._save(results.end_attempt(self.launcher, task, verdict, now, self.notify)))
        except tasks.Conflict as exc:
            log.info("task %s: %s", task["id"], exc)

    def _status(self, w: Wake, attempt: dict[str, Any]) -> dict[str, Any] | None:
        sid = str(attempt.get("session_id"))
        status = w.sessions.get(sid)
        if status is None:  # not in the daemon's cache yet: one file, this session's
            status = tasks_result.session_status(self.root, sid)
        return dict(status) if status is not None else None


def _window_open(task: Mapping[str, Any]) -> bool:
    attempt = (task.get("attempts") or [None])[-1]
    return (task.get("state") == "done" and isinstance(attempt, dict) and bool(attempt.get("pane"))
            and not attempt.get("closed_at"))  # fmt: skip


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _feed(m: Metrics, name: str, total: float, labels: dict[str, str] | None, help: str) -> None:
    """Bring a Prometheus counter up to one of our running totals."""
    current = m.value(name, labels) or 0.0
    m.inc(name, max(0.0, total - current), labels, help=help)
