"""The web page's job queue: long jobs run here, in the server, not in the browser's request.

A job runs in a worker thread, one at a time per GPU (one worker on a machine without one), whatever page
started it. Its state, stage and result live on the server, so a reloaded page (or another browser) finds a
running job and follows it; each job's ``task.json`` in its results folder keeps its outcome, so a restarted
server still shows the last result of each kind, and names a job it was running when it stopped.

While a job runs, :mod:`common.progress` tells its :class:`Task` which bars and stages are live and which rows
each training run logs (the page's live curve).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.files import write_json
from common.progress import following

log = logging.getLogger(__name__)

TASK_FILE = "task.json"
FINISHED = ("done", "failed", "stopped")


class JobStopped(KeyboardInterrupt):
    """Raised in a running job where it next reports progress, after its Stop button: it unwinds the job as
    Ctrl-C does (temporary files removed, a training run's last checkpoint kept)."""


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
        if self.stop_asked:
            raise JobStopped
        with self._lock:
            self.stages[key] = Stage(name, done, total, unit)

    def stage_ended(self, key: int) -> None:
        with self._lock:
            self.stages.pop(key, None)

    def figures(self, run: str, row: dict[str, float]) -> None:
        if self.stop_asked:
            raise JobStopped
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
    """Jobs run one at a time per worker; ``workers`` is the number of GPUs (at least one).

    ``new_folder(kind)`` makes each job's results folder. Earlier jobs' ``task.json`` files under ``results``
    are read back: a job that was queued or running when the server stopped is shown as stopped.
    """

    def __init__(self, results: Path, new_folder: Callable[[str], Path], workers: int | None = None) -> None:
        self.results = results
        self.new_folder = new_folder
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._todo: queue.Queue[tuple[Task, Callable[[Path], dict[str, Any]], Sequence[str]] | None]
        self._todo = queue.Queue()
        self._read_back()
        count = workers if workers is not None else _gpu_count()
        self._threads = [
            threading.Thread(target=self._work, args=(i, count > 1), name=f"page-job-{i}", daemon=True)
            for i in range(max(1, count))
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        kind: str,
        title: str,
        run: Callable[[Path], dict[str, Any]],
        uploads: Sequence[str] = (),
        details: dict[str, Any] | None = None,
    ) -> Task:
        """Queue ``run(folder)``, which returns the job's result (plain JSON values: paths as strings).

        ``uploads`` are the uploaded files' paths, named by their own names in an error message; ``details``
        are kept with the job (:attr:`Task.details`).
        """
        folder = self.new_folder(kind)
        task = Task(id=folder.name, kind=kind, title=title, folder=folder, details=dict(details or {}))
        with self._lock:
            self._tasks[task.id] = task
        self._save(task)
        self._todo.put((task, run, [str(u) for u in uploads if u]))
        return task

    def get(self, task_id: str | None) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id or "")

    def latest(self, kind: str) -> Task | None:
        """The most recently submitted job of ``kind``."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.kind == kind]
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
        """Return ``task`` when it is over or after ``timeout`` seconds (a follower wakes no oftener: a
        thread waking often takes the interpreter from the job's thread)."""
        if not task.over:
            task._ended.wait(timeout)
        return task

    def stop(self, task: Task) -> None:
        """Stop ``task``: a queued one at once, a running one where it next reports its progress."""
        with self._lock:
            if task.state == "queued":
                task.state, task.finished = "stopped", time.time()
                task.error = "stopped from the page before it started"
            elif task.state == "running":
                task.stop_asked = True
                return
            else:
                return
        self._save(task)
        task._ended.set()

    def close(self) -> None:
        """Stop the workers after their current jobs (queued ones are left queued)."""
        for _ in self._threads:
            self._todo.put(None)

    def _work(self, index: int, pin: bool) -> None:
        if pin:
            import torch

            torch.cuda.set_device(index)  # this thread's CUDA work goes to its own GPU
        while (item := self._todo.get()) is not None:
            task, run, uploads = item
            with self._lock:
                if task.state != "queued":  # stopped while it waited
                    continue
                task.state, task.started = "running", time.time()
            self._save(task)
            try:
                with following(task):
                    result = run(task.folder)
                task.result, task.state = result, "done"
            except JobStopped:
                again = "; run it again to go on from its last checkpoint" if task.kind == "train" else ""
                task.error = f"stopped from the page{again}"
                task.state = "stopped"
            except UserError as err:
                task.error, task.state = named_uploads(err.message, uploads), "failed"
            except Exception as err:
                log.exception("page job %s failed", task.id)
                task.error = named_uploads(
                    f"the job failed: {type(err).__name__}: {err} (the server's log has details)", uploads
                )
                task.state = "failed"
            finally:
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


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 1
    except Exception:
        return 1
