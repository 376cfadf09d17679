"""The processes the page's jobs run in: one per GPU, each a spawned Python of its own.

A job runs apart from the web server, so:

- the server's threads take no time from it (a training run goes as fast as from the CLI);
- Stop acts at once: SIGINT to the job's process group (its ffmpeg and helper processes too) unwinds the job
  as Ctrl-C unwinds a command, temporary files removed and a training run's last checkpoint kept; a job that
  has not unwound after :data:`STOP_GRACE_SECONDS` is killed;
- a crash, or a job killed for memory, ends only that job: the next job starts a fresh process;
- each process sees only its own GPU (``CUDA_VISIBLE_DEVICES``), set before anything imports torch.

A job is a :class:`Job`: a module-level function called as ``fn(folder, **kwargs)`` (it is pickled to the
process) returning plain JSON values. Its progress (bars, stages and training rows, :mod:`common.progress`)
comes back as events to the server's follower of the job.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.progress import Follower

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0
"""How long a stopped job has to unwind before its process is killed."""
EVENT_SECONDS = 0.1
"""What a job reports is sent to the server at most this often."""
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``done`` with its result, ``failed`` with the message to show, or ``stopped``."""

    state: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


SERVER_STOPPED = Outcome("stopped", error="the page's server stopped while this job ran; run it again")


@dataclass(frozen=True)
class Job:
    """``fn(folder, **kwargs)``: what one page job runs, in a worker process."""

    fn: Callable[..., dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        inspect.signature(self.fn).bind(Path(), **self.kwargs)  # a wrong argument fails here, not later


class WorkerProcess:
    """One spawned process that runs jobs one after another; ``gpu`` (a CUDA device number, or None for
    whatever the server sees) is the only GPU it sees. Started on creation, so the first job does not wait
    for its imports."""

    def __init__(self, gpu: str | None = None) -> None:
        self.gpu = gpu
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn = None
        self._busy = False
        self._stop_asked_at: float | None = None
        self._listening = False  # the job's Ctrl-C handler is in place: a stop is sent at once
        self._closing = False
        self._lock = threading.Lock()
        self._start()

    def run(self, job: Job, folder: Path, follower: Follower) -> Outcome:
        """Run ``job`` in the process (a fresh one if the last ended), telling ``follower`` its progress;
        returns when it ends."""
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            self._stop_asked_at, self._listening = None, False
            self._conn.send((job.fn, job.kwargs, str(folder)))  # a job that cannot be pickled fails here
            self._busy = True
        try:
            return self._follow(follower)
        finally:
            with self._lock:
                self._busy = False

    def stop(self) -> None:
        """Stop the running job (nothing when none runs): Ctrl-C for the job's whole process group."""
        with self._lock:
            if not self._busy or self._process is None or self._stop_asked_at is not None:
                return
            self._stop_asked_at = time.monotonic()
            if self._listening:
                _signal_group(self._process.pid, signal.SIGINT)

    def close(self, timeout: float = 5.0) -> None:
        """End the process: a running job is stopped (Ctrl-C) and given ``timeout`` seconds to unwind, then
        the process is killed."""
        process, conn = self._process, self._conn
        if process is None:
            return
        self._closing = True
        self.stop()
        if process.is_alive():
            with contextlib.suppress(OSError):
                conn.send(None)
            process.join(timeout)
            if process.is_alive():
                _signal_group(process.pid, signal.SIGKILL)
                process.join(timeout)
        conn.close()
        self._process = None

    def _start(self) -> None:
        if self._conn is not None:
            self._conn.close()
        context = multiprocessing.get_context("spawn")  # a fork of the server (threads, CUDA) is unsafe
        ours, theirs = context.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        process = context.Process(target=_serve, args=(theirs, self.gpu, level), name="page-job-process")
        process.start()
        theirs.close()  # the process's death is then an EOF here
        self._process, self._conn = process, ours

    def _follow(self, follower: Follower) -> Outcome:
        process, conn = self._process, self._conn
        while True:
            try:
                event = conn.recv() if conn.poll(POLL_SECONDS) else None
            except (EOFError, OSError):  # the process is gone (or the server closed the pipe)
                return self._ended(process)
            if event is not None:
                kind, *args = event
                if kind == "listening":  # a stop asked before this is sent now
                    with self._lock:
                        self._listening = True
                        if self._stop_asked_at is not None:
                            _signal_group(process.pid, signal.SIGINT)
                elif kind == "stage":
                    follower.stage(*args)
                elif kind == "stage_ended":
                    follower.stage_ended(*args)
                elif kind == "figures":
                    follower.figures(*args)
                elif kind == "stopped" and self._closing:
                    return SERVER_STOPPED
                else:
                    return Outcome(kind, *args)
            elif not process.is_alive():
                return self._ended(process)
            elif self._stop_overdue():
                log.warning("a stopped page job did not unwind in %.0f s: killing it", STOP_GRACE_SECONDS)
                _signal_group(process.pid, signal.SIGKILL)
                process.join(5.0)
                return self._ended(process)

    def _stop_overdue(self) -> bool:
        asked = self._stop_asked_at
        return asked is not None and time.monotonic() > asked + STOP_GRACE_SECONDS

    def _ended(self, process) -> Outcome:
        """The process ended under its job: the job's outcome; the next job starts a fresh process."""
        process.join(5.0)
        code = process.exitcode
        self._conn.close()
        self._process = None
        if self._closing:
            return SERVER_STOPPED
        if self._stop_asked_at is not None:
            return Outcome("stopped")
        how = f"it was killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        memory = " (perhaps out of memory)" if code == -signal.SIGKILL else ""
        return Outcome(
            "failed",
            error=f"the job's process ended unexpectedly: {how}{memory}; the next job starts a fresh one",
        )


def _signal_group(pid: int, sig: int) -> None:
    """``sig`` to the worker's process group (it leads its own), or to the worker alone before it has one."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class _Forward:
    """The worker's follower: each bar, stage and training row, queued for the server."""

    def __init__(self, outbox: queue.SimpleQueue) -> None:
        self.outbox = outbox

    def stage(self, key: int, name: str, done: float, total: float | None, unit: str) -> None:
        self.outbox.put(("stage", key, name, done, total, unit))

    def stage_ended(self, key: int) -> None:
        self.outbox.put(("stage_ended", key))

    def figures(self, run: str, row: dict[str, float]) -> None:
        self.outbox.put(("figures", run, row))


def _serve(conn, gpu: str | None, level: int) -> None:
    """The worker process: run each job it is sent, until told to end (None) or the server is gone."""
    os.setsid()  # its own group: Stop reaches the job's ffmpeg and helpers; a terminal's Ctrl-C does not
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C only while a job runs
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    outbox: queue.SimpleQueue = queue.SimpleQueue()  # sent by a thread: Ctrl-C never cuts a message in two
    sender = threading.Thread(target=_send, args=(conn, outbox), daemon=True)
    sender.start()
    _warm()
    follower = _Forward(outbox)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            break
        except Exception as err:  # a job whose function cannot be imported here
            outbox.put(("failed", {}, f"the job could not start: {type(err).__name__}: {err}"))
            continue
        if item is None:
            break
        fn, kwargs, folder = item
        outbox.put(_run_one(fn, kwargs, Path(folder), follower, outbox))
    outbox.put(None)
    sender.join()


def _send(conn, outbox: queue.SimpleQueue) -> None:
    """Send what the job reports, every :data:`EVENT_SECONDS` at most: of a bar's counts since the last
    sending, only its latest."""
    while True:
        events = [outbox.get()]
        with contextlib.suppress(queue.Empty):
            while True:
                events.append(outbox.get_nowait())
        ending = None in events
        if ending:
            events = events[: events.index(None)]
        latest: dict[int, int] = {}  # a live bar -> where its count is in `batch`
        batch: list[tuple] = []
        for event in events:
            if event[0] == "stage" and event[1] in latest:
                batch[latest[event[1]]] = event
                continue
            if event[0] == "stage":
                latest[event[1]] = len(batch)
            elif event[0] == "stage_ended":
                latest.pop(event[1], None)
            batch.append(event)
        try:
            for event in batch:
                conn.send(event)
        except (OSError, ValueError):  # the server is gone
            return
        if ending:
            return
        time.sleep(EVENT_SECONDS)


def _run_one(
    fn: Callable[..., dict], kwargs: dict, folder: Path, follower: _Forward, outbox: queue.SimpleQueue
) -> tuple:
    from common.errors import UserError
    from common.progress import following

    try:
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            outbox.put(("listening",))
            with following(follower):
                result = fn(folder, **kwargs)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return ("done", result, None)
    except KeyboardInterrupt:
        return ("stopped", {}, None)
    except UserError as err:
        return ("failed", {}, err.message)
    except BaseException as err:  # shown on the page; the traceback goes to the server's log
        log.exception("page job in %s failed", folder)
        message = f"the job failed: {type(err).__name__}: {err} (the server's log has details)"
        return ("failed", {}, message)


def _warm() -> None:
    """Import what jobs use before the first one comes."""
    try:
        import torch  # noqa: F401

        import pipeline.ui.jobs  # noqa: F401
    except ImportError:
        pass
