"""The web page's job queue: long jobs run on the server, not in the browser's request.

Jobs run one at a time per GPU (one at a time on a machine without one), whatever page started them, each in
that GPU's worker process (:mod:`pipeline.ui.workers`) and followed by a thread of the server. Its state,
stage and result live on the server, so a reloaded page (or another browser) finds a
running job and follows it; each job's ``task.json`` in its results folder keeps its outcome, so a restarted
server still shows the last result of each kind, and names a job it was running when it stopped.

While a job runs, its process tells its :class:`Task` which bars and stages are live (:mod:`common.progress`)
and which rows each training run logs (the page's live curve).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.files import write_json
from pipeline.ui.workers import Job, Outcome, WorkerProcess

log = logging.getLogger(__name__)

TASK_FILE = "task.json"
FINISHED = ("done", "failed", "stopped")


@dataclass
class Stage:
    """One live progress bar or named stage of a running job."""

    name: str
    done: float
    total: float | None
    unit: str

    def __str__(self) -> str:
        if not self.total:
            return self.name
        return f"{self.name} {int(self.done)}/{int(self.total)} {self.unit}".rstrip()


@dataclass
class Task:
    """One job of the page: what it is, where it stands, and what it made."""

    id: str
    kind: str
    title: str
    folder: Path
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """What the page needs to show the job again (plain JSON values), e.g. which model a training trains."""
    stages: dict[int, Stage] = field(default_factory=dict)
    """The live bars and stages, outermost first."""
    rows: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """Each training run's logged rows, in order (run name -> rows)."""
    stop_asked: bool = False
    owner: str = ""
    """Who started it: the login's user name on a page with logins, else empty."""
    worker: int | None = None
    """Which worker runs it (while it runs)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def over(self) -> bool:
        return self.state in FINISHED

    def seconds(self, now: float | None = None) -> float:
        """How long it has run (or ran)."""
        if self.started is None:
            return 0.0
        return (self.finished or now or time.time()) - self.started

    def fraction(self) -> float | None:
        """How far the innermost counted bar is, 0..1 (None when nothing is counted)."""
        with self._lock:
            counted = [s for s in self.stages.values() if s.total]
        if not counted:
            return None
        last = counted[-1]
        return min(1.0, max(0.0, last.done / last.total))

    def where(self) -> str:
        """The live stages, outermost first: ``tracking › tracking frames 120/300 frame``."""
        with self._lock:
            stages = [str(s) for s in self.stages.values()]
        return " › ".join(dict.fromkeys(stages))

    def curve(self) -> dict[str, list[dict[str, float]]]:
        with self._lock:
            return {run: list(rows) for run, rows in self.rows.items()}

    # what common.progress tells a running job
    def stage(self, key: int, name: str, done: float, total: float | None, unit: str) -> None:
        with self._lock:
            self.stages[key] = Stage(name, done, total, unit)

    def stage_ended(self, key: int) -> None:
        with self._lock:
            self.stages.pop(key, None)

    def figures(self, run: str, row: dict[str, float]) -> None:
        with self._lock:
            self.rows.setdefault(run, []).append({key: float(value) for key, value in row.items()})

    def record(self) -> dict[str, Any]:
        """What ``task.json`` keeps."""
        keys = (
            "id",
            "kind",
            "title",
            "state",
            "submitted",
            "started",
            "finished",
            "error",
            "result",
            "details",
            "owner",
        )
        return {key: getattr(self, key) for key in keys}


def named_uploads(message: str, uploads: Sequence[str]) -> str:
    """``message`` with each uploaded file named as the user named it, not by its path in the server's upload
    cache."""
    for path in uploads:
        if path and len(path) > 1:
            message = message.replace(str(path), Path(path).name)
    return message


class TaskQueue:
    """Jobs run one at a time per worker process; ``gpus`` lists the CUDA device each worker sees (default:
    one worker per visible GPU; one worker, seeing what the server sees, without a GPU).

    ``new_folder(kind)`` makes each job's results folder. Earlier jobs' ``task.json`` files under ``results``
    are read back: a job that was queued or running when the server stopped is shown as stopped.
    """

    def __init__(
        self,
        results: Path,
        new_folder: Callable[[str], Path],
        gpus: Sequence[str | None] | None = None,
    ) -> None:
        self.results = results
        self.new_folder = new_folder
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._todo: queue.Queue[tuple[Task, Job, Sequence[str]] | None] = queue.Queue()
        self._read_back()
        self._workers = [WorkerProcess(gpu) for gpu in (gpus if gpus else _visible_gpus())]
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"page-job-{i}", daemon=True)
            for i in range(len(self._workers))
        ]
        for thread in self._threads:
            thread.start()
        atexit.register(self.close)

    def submit(
        self,
        kind: str,
        title: str,
        job: Job,
        uploads: Sequence[str] = (),
        details: dict[str, Any] | None = None,
        owner: str = "",
    ) -> Task:
        """Queue ``job``, run as ``job.fn(folder, **job.kwargs)`` in a worker process; it returns the job's
        result (plain JSON values: paths as strings).

        ``uploads`` are the uploaded files' paths, named by their own names in an error message; ``details``
        are kept with the job (:attr:`Task.details`); ``owner`` is who started it.
        """
        folder = self.new_folder(kind)
        task = Task(
            id=folder.name, kind=kind, title=title, folder=folder, details=dict(details or {}), owner=owner
        )
        with self._lock:
            self._tasks[task.id] = task
        self._save(task)
        self._todo.put((task, job, [str(u) for u in uploads if u]))
        return task

    def get(self, task_id: str | None) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id or "")

    def latest(self, kind: str, owner: str = "") -> Task | None:
        """The most recently submitted job of ``kind`` that ``owner`` started."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.kind == kind and t.owner == owner]
        return max(tasks, key=lambda t: t.submitted, default=None)

    def tasks(self) -> list[Task]:
        """Every job, newest first."""
        with self._lock:
            return sorted(self._tasks.values(), key=lambda t: t.submitted, reverse=True)

    def ahead(self, task: Task) -> int:
        """How many queued jobs wait before ``task``."""
        with self._lock:
            return sum(
                1 for t in self._tasks.values() if t.state == "queued" and t.submitted < task.submitted
            )

    def wait(self, task: Task, timeout: float) -> Task:
        """Return ``task`` when it is over or after ``timeout`` seconds."""
        if not task.over:
            task._ended.wait(timeout)
        return task

    def stop(self, task: Task) -> None:
        """Stop ``task``: a queued one is dropped, a running one unwound at once (Ctrl-C in its process)."""
        with self._lock:
            if task.state == "queued":
                task.state, task.finished = "stopped", time.time()
                task.error = "stopped from the page before it started"
            elif task.state == "running":
                task.stop_asked = True
                if task.worker is not None:
                    self._workers[task.worker].stop()
                return
            else:
                return
        self._save(task)
        task._ended.set()

    def close(self) -> None:
        """End the workers: a running job is stopped (Ctrl-C) and given a few seconds to unwind; queued ones
        are left queued."""
        for _ in self._threads:
            self._todo.put(None)
        for worker in self._workers:
            worker.close()

    def _work(self, index: int) -> None:
        worker = self._workers[index]
        while (item := self._todo.get()) is not None:
            task, job, uploads = item
            with self._lock:
                if task.state != "queued":  # stopped while it waited
                    continue
                task.state, task.started, task.worker = "running", time.time(), index
            self._save(task)
            try:
                outcome = worker.run(job, task.folder, task)
            except Exception as err:  # the job could not be sent (a programming error)
                log.exception("page job %s could not start", task.id)
                outcome = Outcome("failed", error=f"the job could not start: {type(err).__name__}: {err}")
            with self._lock:
                task.result, task.state, task.worker = outcome.result, outcome.state, None
                if outcome.state == "stopped":
                    again = "; run it again to go on from its last checkpoint" if task.kind == "train" else ""
                    task.error = outcome.error or f"stopped from the page{again}"
                elif outcome.state == "failed":
                    task.error = named_uploads(outcome.error or "the job failed", uploads)
                task.finished = time.time()
            with task._lock:
                task.stages.clear()
            self._save(task)
            task._ended.set()

    def _save(self, task: Task) -> None:
        try:
            write_json(task.folder / TASK_FILE, task.record())
        except OSError as err:  # the page goes on; only a restarted server would miss this job
            log.warning("could not record page job %s: %s", task.id, err)

    def _read_back(self) -> None:
        if not self.results.is_dir():
            return
        for path in self.results.glob(f"*/{TASK_FILE}"):
            try:
                record = json.loads(path.read_text())
                task = Task(
                    folder=path.parent, **{k: record[k] for k in Task.__dataclass_fields__ if k in record}
                )
            except (OSError, ValueError, TypeError) as err:
                log.warning("skipping unreadable %s: %s", path, err)
                continue
            if not task.over:
                task.state, task.finished = "stopped", task.finished or path.stat().st_mtime
                task.error = "the page's server stopped while this job was queued or running; run it again"
                self._save(task)
            self._tasks[task.id] = task


def _visible_gpus() -> list[str | None]:
    """One worker per GPU the server sees (by its number as CUDA_VISIBLE_DEVICES names it); one worker
    seeing what the server sees when there is no GPU, or one only."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        count = 0
    if count <= 1:
        return [None]
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if len(listed) >= count else [str(i) for i in range(count)]
