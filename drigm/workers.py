"""Running a sweep's jobs: in this process, in supervised worker processes, or as Ray tasks.

``local`` runs the jobs in supervised worker processes (spawn context, torch at one thread per worker, one job at
a time each), or in the calling process when there is one worker. The supervisor notices a worker's death (any
signal, any exit): only the job it held fails, and that job is rerun from its last checkpoint in a fresh worker up
to ``retries`` times (default 2) while the other jobs go on; a job that raises is not retried. Workers die with the
sweep whatever kills it (``PR_SET_PDEATHSIG`` on Linux, plus a thread polling the parent pid), and SIGTERM or
Ctrl-C stop them too.

``ray`` submits the same jobs as Ray tasks (one CPU each, retried by Ray after a worker's death as many times) to
the cluster at ``ray_address`` or to a local instance (an already initialised Ray is used as it is). Ray workers on
other machines need this package installed and the sweep's output root on shared storage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from multiprocessing import get_context
from typing import Any

from drigm.jobs import JobSpec, run_job
from reference.atomic_io import atomic_write_bytes


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _run_in_worker(spec: JobSpec) -> dict[str, Any]:
    _init_worker()
    return run_job(spec)


def run_inline(specs: list[JobSpec], bar: Any) -> list[tuple[JobSpec, str]]:
    """One worker: run the jobs in this process, one after another (no process start-up cost)."""
    failures: list[tuple[JobSpec, str]] = []
    _init_worker()
    for spec in specs:
        try:
            run_job(spec)
        except Exception as exc:  # recorded like a worker's failure; the error file holds the traceback
            failures.append((spec, f"{type(exc).__name__}: {exc}"))
            bar.write(f"FAILED {spec.job.method} seed {spec.job.seed}: {type(exc).__name__}: {exc}")
        bar.update(1)
    return failures


DEFAULT_RETRIES = 2
"""How many times the local backend restarts a job whose worker process died (from its last checkpoint)."""


_PR_SET_PDEATHSIG = 1


def _watch_parent(parent_pid: int, interval: float) -> None:
    """Exit this process as soon as its parent is no longer `parent_pid` (the parent died; we were reparented)."""
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(128 + signal.SIGKILL)


def die_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Make this process exit when its parent `parent_pid` dies, whatever signal killed the parent.

    On Linux the kernel delivers SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon
    thread also polls ``os.getppid()`` every `interval` seconds. A parent already gone exits at once.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(128 + signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), name="drigm-parent-watch", daemon=True).start()


def _worker_main(conn: Any, parent_pid: int) -> None:
    """A supervised worker: run the JobSpecs the supervisor sends, one at a time, answering each with
    ("ok", result) or ("error", message); a None (or a closed pipe) ends it. It dies with its parent."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle: it stops the workers
    _init_worker()
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        try:
            result = run_job(spec)
        except Exception as exc:  # the job failed (its error file holds the traceback); the worker goes on
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", result))


def _death_reason(proc: Any) -> str:
    """Why a worker process ended: the signal that killed it, or its exit status."""
    proc.join(timeout=5)
    code = proc.exitcode
    if code is None:
        return f"its worker process (pid {proc.pid}) stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its worker process (pid {proc.pid}) was killed by {name}"
    return f"its worker process (pid {proc.pid}) exited with status {code}"


@dataclass
class _Slot:
    proc: Any
    conn: Any
    spec: JobSpec | None = None


def _stop_workers(slots: list[_Slot]) -> None:
    """Terminate (then kill, after 5 s) every worker of `slots` and reap it."""
    for slot in slots:
        if slot.proc.is_alive():
            slot.proc.terminate()
    deadline = time.monotonic() + 5
    for slot in slots:
        slot.proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join(timeout=5)
        slot.conn.close()


def run_local(
    specs: list[JobSpec], workers: int, bar: Any, retries: int = DEFAULT_RETRIES
) -> tuple[list[tuple[JobSpec, str]], list[tuple[JobSpec, str]]]:
    """Supervise `workers` spawned processes running `specs`; returns (failed jobs, retried jobs) with reasons.

    Guarantees: a job whose worker dies (any signal, any exit) fails alone; it is run again, resuming its last
    checkpoint, up to `retries` times in a fresh worker, and the other jobs go on. A job that raises fails
    without retry (the error is deterministic). Workers die with this process; on an exception here (Ctrl-C,
    SIGTERM turned into SystemExit) they are terminated before it propagates.
    """
    ctx = get_context("spawn")
    queue = deque(specs)
    deaths: dict[int, list[str]] = {}  # id(spec) -> why its workers died (JobSpec need not be hashable)
    failures: list[tuple[JobSpec, str]] = []
    slots: list[_Slot] = []

    def start() -> _Slot:
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(child_conn, os.getpid()), name="drigm-sweep-worker")
        proc.start()
        child_conn.close()
        slot = _Slot(proc, parent_conn)
        slots.append(slot)
        return slot

    def assign(slot: _Slot) -> None:
        """Give `slot` the next job, or release its worker when none is left."""
        if queue:
            slot.spec = queue.popleft()
            with contextlib.suppress(OSError):  # a worker that just died: its sentinel reports it with this job
                slot.conn.send(slot.spec)
        else:
            slot.spec = None
            with contextlib.suppress(OSError):
                slot.conn.send(None)

    def failed(spec: JobSpec, msg: str) -> None:
        failures.append((spec, msg))
        bar.write(f"FAILED {spec.job.method} seed {spec.job.seed}: {msg}")
        bar.update(1)

    try:
        for _ in range(min(workers, len(queue))):
            assign(start())
        while any(slot.spec is not None for slot in slots):
            busy = [slot for slot in slots if slot.spec is not None]
            mp_connection.wait([slot.conn for slot in busy] + [slot.proc.sentinel for slot in busy])
            for slot in busy:
                spec = slot.spec
                assert spec is not None
                message: tuple[str, Any] | None = None
                try:
                    if slot.conn.poll():
                        message = slot.conn.recv()
                    elif slot.proc.is_alive():
                        continue
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    kind, payload = message
                    if kind == "ok":
                        bar.update(1)
                    else:
                        failed(spec, payload)
                    assign(slot)
                    continue
                # the worker died holding `spec`: only that job is affected
                reason = _death_reason(slot.proc)
                slot.conn.close()
                slots.remove(slot)
                history = deaths.setdefault(id(spec), [])
                history.append(reason)
                if len(history) <= retries:
                    bar.write(
                        f"RETRY {spec.job.method} seed {spec.job.seed} ({len(history)}/{retries}): {reason}; "
                        "resuming from its last checkpoint in a new worker"
                    )
                    queue.appendleft(spec)
                else:
                    msg = f"WorkerDied: {reason} ({len(history)} times; retried {retries} times)"
                    with contextlib.suppress(OSError):
                        for out in spec.result_paths():
                            atomic_write_bytes(out.with_suffix(".error.txt"), (msg + "\n").encode(), make_parents=True)
                    failed(spec, msg)
                if queue:
                    assign(start())
    except BaseException:  # interrupted or terminated: stop the workers too (their runs resume next time)
        _stop_workers(slots)
        raise
    for slot in slots:  # every worker was sent None: let them exit, then reap
        slot.proc.join(timeout=10)
    _stop_workers(slots)
    failed_ids = {id(spec) for spec, _ in failures}
    retried = [(s, "; ".join(deaths[id(s)])) for s in specs if id(s) in deaths and id(s) not in failed_ids]
    return failures, retried


def exit_on_sigterm() -> None:
    """In the main thread, turn SIGTERM into SystemExit, so ``kill`` of a sweep stops its workers as Ctrl-C does
    (orphaned workers would otherwise keep training and hold their run directories' locks)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_ray(
    specs: list[JobSpec], workers: int | None, bar: Any, address: str | None, retries: int = DEFAULT_RETRIES
) -> list[tuple[JobSpec, str]]:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--backend ray needs the 'ray' package (pip install 'ray>=2.40')") from exc
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers, include_dashboard=False)
    remote = ray.remote(num_cpus=1, max_retries=retries)(_run_in_worker)  # retries: worker deaths only
    refs = {remote.remote(s): s for s in specs}
    failures: list[tuple[JobSpec, str]] = []
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            spec = refs.pop(ref)
            try:
                ray.get(ref)
            except Exception as exc:  # a RayTaskError wraps the worker's exception
                cause = getattr(exc, "cause", None) or exc
                failures.append((spec, f"{type(cause).__name__}: {cause}"))
                bar.write(f"FAILED {spec.job.method} seed {spec.job.seed}: {type(cause).__name__}: {cause}")
            bar.update(1)
    return failures
