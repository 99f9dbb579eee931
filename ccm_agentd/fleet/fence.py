"""Self-fencing: an agent stops before the lease of its task can expire, whatever happened to its daemon.

A claim's lease is L seconds (``[fleet] lease_s``, default 60) from the database's clock at the renewal.
The machine counts from the moment it *sent* the renewal that succeeded (earlier than the database's
``now()``, so never late), on this machine's boot clock (CLOCK_BOOTTIME on Linux: it keeps counting during
suspend, so a laptop that slept through its lease finds it expired):

- every L/4 the link renews every lease it holds, in one round trip;
- at 2L/3 without a successful renewal ccm-agentd stops the agent itself (the tasks job's cancel: Esc, end
  the process, close the window) and gives the task back when it can reach the database again;
- at 5L/6 the wrapper this module runs around claude ends it (SIGTERM, SIGKILL 5 s later) even if
  ccm-agentd is dead (kill -9) or hung; a wrapper started after that refuses to start claude;
- at L the lease expires in the database, and only then may another machine claim the task, as attempt
  n+1. A write back naming attempt n is refused from then on.

So for L = 60 s: the daemon stops the agent 20 s before the lease can expire, the wrapper kills it 10 s
before. The lease file ``$CCM_HOME/fleet/leases/<task>.json`` is what the wrapper watches; only
``LeaseFiles`` writes it. Standard library only: the wrapper runs as ``python -m ccm_agentd.fleet.fence``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

STOP_FRACTION = 2 / 3  # the daemon stops the agent after this much of a lease without a renewal
KILL_FRACTION = 5 / 6  # the wrapper kills it after this much
RENEW_FRACTION = 1 / 4  # how often leases are renewed
KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL this much later
EXIT_FENCED = 75  # EX_TEMPFAIL: the wrapper ended (or refused to start) the agent


def boot_clock() -> float:
    """Seconds on a clock all processes of this boot share and that counts through suspend."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


def boot_id() -> str:
    """Differs after a reboot, when boot clock values start over."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return str(round((time.time() - boot_clock()) / 60))  # the boot time, to the minute


def leases_dir(root: str) -> str:
    return os.path.join(root, "fleet", "leases")


def lease_path(root: str, task_id: str) -> str:
    return os.path.join(leases_dir(root), task_id + ".json")


HELD, ENDED, FENCED, LOST = "held", "ended", "fenced", "lost"


@dataclass
class Lease:
    task_id: str
    attempt: int
    system: str
    lease_s: float
    renewed_at: float  # boot clock when the last successful renewal (or the claim) was sent
    lease_until: str  # the database's expiry, ISO (for people)
    boot: str
    # held; ended (reported, nothing to fence any more); fenced (this machine stopped the agent: the lease
    # ran short); lost (the database refused a renewal: another attempt may run). Only held is renewed.
    status: str = HELD
    project: str = ""
    local_id: str | None = None  # the local task running it
    changed_at: float = 0.0  # boot clock of the last change of status

    @property
    def stop_at(self) -> float:
        return self.renewed_at + self.lease_s * STOP_FRACTION

    @property
    def kill_at(self) -> float:
        """When the wrapper ends the agent: never once ended, at once when fenced or lost."""
        if self.status == ENDED:
            return float("inf")
        return self.renewed_at + self.lease_s * KILL_FRACTION if self.status == HELD else float("-inf")


def read_lease(path: str) -> Lease | None:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
        return Lease(**{k: data[k] for k in Lease.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


class LeaseFiles:
    """The lease files of one state dir, written by the link (claims, renewals, losses) and the job (the
    local task, ends, fencing). One lock orders the two threads: once an attempt is no longer held, a late
    renewal cannot revive it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._lock = threading.Lock()
        self.leases: dict[str, Lease] = {}
        self._load()

    def _load(self) -> None:
        try:
            names = os.listdir(leases_dir(self.root))
        except FileNotFoundError:
            return
        now_boot = boot_id()
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                lease = read_lease(os.path.join(leases_dir(self.root), name))
                if lease is not None and lease.task_id + ".json" == name:
                    if lease.boot != now_boot:
                        lease.renewed_at = float("-inf")  # from before a reboot: long expired
                    self.leases[lease.task_id] = lease

    def _write(self, lease: Lease) -> None:
        from ccm_hooks import fileio, paths

        paths.ensure_dir(leases_dir(self.root))
        fileio.atomic_write(lease_path(self.root, lease.task_id), fileio.encode_line(asdict(lease)))

    def renewed(self, task_id: str, attempt: int, sent_at: float, until: str, *, system: str, lease_s: float,
                project: str = "") -> bool:  # fmt: skip
        """Record a claim or a renewal sent at ``sent_at`` (boot clock). False if that attempt is no longer
        held here (ended, fenced or lost meanwhile)."""
        with self._lock:
            old = self.leases.get(task_id)
            if old is not None and old.attempt == attempt:
                if old.status != HELD:
                    return False
                lease = replace(old, renewed_at=max(sent_at, old.renewed_at), lease_until=until)
            elif old is not None and old.attempt > attempt:
                return False
            else:
                lease = Lease(task_id, attempt, system, lease_s, sent_at, until, boot_id(), project=project,
                              changed_at=sent_at)  # fmt: skip
            self.leases[task_id] = lease
            self._write(lease)
            return True

    def _set(self, task_id: str, attempt: int, **changes: Any) -> Lease | None:
        with self._lock:
            old = self.leases.get(task_id)
            if old is None or old.attempt != attempt:
                return None
            if "status" in changes and old.status != HELD and changes["status"] != ENDED:
                changes.pop("status")  # fenced/lost stay so until ended
            lease = self.leases[task_id] = replace(old, **changes)
            self._write(lease)
            return lease

    def attach(self, task_id: str, attempt: int, local_id: str) -> None:
        self._set(task_id, attempt, local_id=local_id)

    def end(self, task_id: str, attempt: int) -> None:
        """The attempt is over and reported: the wrapper stops watching the clock."""
        self._set(task_id, attempt, status=ENDED, changed_at=boot_clock())

    def fence(self, task_id: str, attempt: int) -> Lease | None:
        """This machine could not renew in time: the wrapper ends the agent now; no more renewals."""
        return self._set(task_id, attempt, status=FENCED, changed_at=boot_clock())

    def lost(self, task_id: str, attempt: int) -> Lease | None:
        """The database refused the renewal: the wrapper ends the agent now."""
        return self._set(task_id, attempt, status=LOST, changed_at=boot_clock())

    def forget(self, task_id: str) -> None:
        with self._lock:
            self.leases.pop(task_id, None)
            try:
                os.unlink(lease_path(self.root, task_id))
            except FileNotFoundError:
                pass

    def snapshot(self) -> dict[str, Lease]:
        with self._lock:
            return {k: replace(v) for k, v in self.leases.items()}


# --- the wrapper -----------------------------------------------------------------------------------------


def _say(text: str) -> None:
    sys.stderr.write(f"ccm fence: {text}\n")
    sys.stderr.flush()


def _deadline(path: str) -> tuple[float, Lease | None]:
    """When the agent must be dead (boot clock): inf once the attempt ended, -inf when fenced or lost."""
    lease = read_lease(path)
    if lease is None or lease.boot != boot_id():
        return float("-inf"), lease  # gone or from another boot: no lease at all
    return lease.kill_at, lease


def run(path: str, command: list[str], poll_s: float = 1.0) -> int:
    """Run ``command`` while the lease in ``path`` is alive; end it when the lease is about to expire."""
    deadline, lease = _deadline(path)
    if deadline <= boot_clock():
        _say(f"the lease in {path} has expired or is missing: not starting the agent")
        return EXIT_FENCED
    child = subprocess.Popen(command)
    # After the spawn (an ignored signal stays ignored across exec): the terminal's Ctrl-C, Ctrl-\ and
    # Ctrl-Z reach the whole foreground process group, and they are the agent's, not ours.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)

    def forward(signum: int, frame: Any) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            return child.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        deadline, lease = _deadline(path)
        if boot_clock() >= deadline:
            break
    who = f"fleet task {lease.task_id} attempt {lease.attempt}" if lease else path
    why = {LOST: "the database gave the task to another attempt", FENCED: "this machine lost the database"}
    _say(
        f"{who}: {why.get(lease.status if lease else '', 'the lease was not renewed')}; ending the agent "
        "before the lease can expire (self-fencing)"
    )
    child.terminate()
    try:
        child.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    return EXIT_FENCED


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        _say("usage: python -m ccm_agentd.fleet.fence LEASE_FILE -- COMMAND [ARG...]")
        return 2
    return run(args[0], args[2:])


if __name__ == "__main__":
    sys.exit(main())
