"""Durable job state: ``batch.sqlite`` under the output root (SQLite in WAL mode, written by the driver only).

Each job (id: manifest line + a hash of the row and its settings) has a state (pending, running, done,
failed; rows that did not pass the checks are kept as ``invalid`` for the report), attempts, the number of
times it was recorded done, its error, start and finish times, seconds, and its output's size and SHA-256.

Running the same batch again (:meth:`BatchState.plan`): a done job is skipped when its output is still
there with the recorded size and SHA-256 (else it is redone); a job left ``running`` (its run was killed)
is redone from scratch, unless its worker had finished it: a worker leaves ``logs/<job>.done.json`` (the
output's size and SHA-256) right after the output, and a job whose note matches its output is recorded done
without running again; a failed job stays failed unless ``retry_failed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.errors import UserError

DB_NAME = "batch.sqlite"
LOCK_NAME = "batch.lock"
STATES = ("pending", "running", "done", "failed", "invalid")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    line INTEGER NOT NULL,
    kind TEXT NOT NULL,
    out TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    completions INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    started REAL,
    finished REAL,
    seconds REAL,
    size INTEGER,
    sha256 TEXT,
    log TEXT NOT NULL DEFAULT '',
    run INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL
);
"""

COLUMNS = (
    "id", "line", "kind", "out", "state", "attempts", "completions", "error", "started", "finished",
    "seconds", "size", "sha256", "log",
)  # fmt: skip


def output_fingerprint(path: str | os.PathLike) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return os.path.getsize(path), h.hexdigest()


@contextlib.contextmanager
def batch_lock(root: Path) -> Iterator[None]:
    """Held while a batch runs on ``root``: a second batch on the same folder is refused, not interleaved."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another batch is running on {root}", "wait for it to finish, or choose another --out-root"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class BatchState:
    """The job table of one output root."""

    def __init__(self, root: str | os.PathLike, create: bool = True) -> None:
        self.root = Path(root)
        path = self.root / DB_NAME
        if not create and not path.is_file():
            raise UserError(f"no batch database at {path}", "give the --out-root of a batch that has run")
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.run = self._latest_run()

    def close(self) -> None:
        self.db.close()

    def _latest_run(self) -> int:
        row = self.db.execute("SELECT MAX(run) FROM runs").fetchone()
        return int(row[0] or 0)

    def start_run(self) -> int:
        cur = self.db.execute("INSERT INTO runs (started) VALUES (?)", (time.time(),))
        self.run = int(cur.lastrowid)
        return self.run

    def get(self, job_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def plan(
        self, jobs: list, invalid: dict[int, tuple[str, str, str]], retry_failed: bool, dry: bool = False
    ) -> tuple[list, dict[str, str]]:
        """Record this run's jobs; return the ones to run and why each job is (not) run.

        ``jobs`` are :class:`pipeline.batch.manifest.Job`; ``invalid`` maps the line of each row that did
        not pass the checks to (kind, out, problems). ``dry``: nothing is recorded.
        """
        todo = []
        why: dict[str, str] = {}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if not dry:
                self.start_run()
            else:
                self.run += 1
            for job in jobs:
                known = self.get(job.id)
                log = str(Path("logs") / f"{job.id}.log")
                if known is None:
                    self.db.execute(
                        "INSERT INTO jobs (id, line, kind, out, state, log, run) VALUES (?,?,?,?,?,?,?)",
                        (job.id, job.line, job.kind, job.out, "pending", log, self.run),
                    )
                    why[job.id] = "new"
                    todo.append(job)
                    continue
                self.db.execute("UPDATE jobs SET run = ? WHERE id = ?", (self.run, job.id))
                state = known["state"]
                if state == "done":
                    reason = self._output_changed(job.out_path, known)
                    if reason is None:
                        why[job.id] = "done before, output checked"
                        continue
                    why[job.id] = f"redone: {reason}"
                elif state == "running" and self._finished_by_worker(job):
                    why[job.id] = "finished as its run was stopped: output checked, recorded done"
                    continue
                elif state == "running":
                    why[job.id] = "redone: its run was stopped while it ran"
                elif state == "failed" and not retry_failed:
                    why[job.id] = "failed before (--retry-failed retries it)"
                    continue
                elif state == "failed":
                    why[job.id] = "retried"
                else:
                    why[job.id] = "pending"
                self.db.execute("UPDATE jobs SET state = 'pending', error = '' WHERE id = ?", (job.id,))
                todo.append(job)
            for line, problem in invalid.items():
                job_id = f"{line:05d}-invalid"
                self.db.execute(
                    "INSERT INTO jobs (id, line, kind, out, state, error, run) VALUES (?,?,?,?,?,?,?) "
                    "ON CONFLICT(id) DO UPDATE SET error = excluded.error, run = excluded.run, "
                    "kind = excluded.kind, out = excluded.out",
                    (job_id, line, problem[0], problem[1], "invalid", problem[2], self.run),
                )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("ROLLBACK" if dry else "COMMIT")
        if dry:
            self.run -= 1
        return todo, why

    def done_note(self, job_id: str) -> Path:
        """Where a worker notes a finished job's output (``size``, ``sha256``, ``seconds``)."""
        return self.root / "logs" / f"{job_id}.done.json"

    def _finished_by_worker(self, job) -> bool:
        """Record ``job`` done if its worker's note is there and matches its output (in a transaction)."""
        import json

        try:
            note = json.loads(self.done_note(job.id).read_text())
        except (OSError, ValueError):
            return False
        if self._output_changed(job.out_path, note) is not None:
            return False
        self.db.execute(
            "UPDATE jobs SET state = 'done', completions = completions + 1, finished = ?, seconds = ?, "
            "size = ?, sha256 = ?, error = '' WHERE id = ?",
            (time.time(), note.get("seconds"), note["size"], note["sha256"], job.id),
        )
        return True

    @staticmethod
    def _output_changed(path: str, known: dict[str, Any]) -> str | None:
        if not os.path.isfile(path):
            return "its output is gone"
        if os.path.getsize(path) != known["size"]:
            return "its output changed size"
        if output_fingerprint(path)[1] != known["sha256"]:
            return "its output's contents changed"
        return None

    def mark_running(self, job_id: str) -> None:
        self.done_note(job_id).unlink(missing_ok=True)  # a note of an earlier attempt
        self.db.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?, finished = NULL, "
            "error = '' WHERE id = ?",
            (time.time(), job_id),
        )

    def mark_done(self, job_id: str, seconds: float, size: int, sha256: str) -> None:
        self.db.execute(
            "UPDATE jobs SET state = 'done', completions = completions + 1, finished = ?, seconds = ?, "
            "size = ?, sha256 = ?, error = '' WHERE id = ?",
            (time.time(), seconds, size, sha256, job_id),
        )

    def mark_failed(self, job_id: str, seconds: float, error: str) -> None:
        self.db.execute(
            "UPDATE jobs SET state = 'failed', finished = ?, seconds = ?, error = ? WHERE id = ?",
            (time.time(), seconds, error, job_id),
        )

    def jobs(self, run: int | None = None) -> list[dict[str, Any]]:
        """The jobs of ``run`` (default: the latest), in manifest order."""
        run = self.run if run is None else run
        rows = self.db.execute("SELECT * FROM jobs WHERE run = ? ORDER BY line, id", (run,)).fetchall()
        return [dict(r) for r in rows]

    def counts(self, run: int | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for job in self.jobs(run):
            counts[job["state"]] += 1
        return counts
