"""``talking-portrait batch``: the manifest's jobs on a pool of local worker processes (or Ray), resumable.

The driver (this process) alone writes the job database; workers run one job at a time
(:func:`pipeline.batch.jobs.run_job`) and return what it made. At most ``workers`` jobs are handed out at
once and each is marked ``running`` when handed out, so a run killed at any moment leaves the database
saying exactly which jobs were under way: the next run redoes those and skips the done ones. Workers end
themselves when the driver is gone (:func:`pipeline.batch.jobs.worker_init`), and every output is written
to a temporary and renamed, so no half-written output is ever left under its name.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.progress import bar as progress_bar
from pipeline.batch.jobs import needs_gpu, run_job, worker_init
from pipeline.batch.manifest import Job, Manifest, base_overrides, read_manifest
from pipeline.batch.report import counts_line, table, write_reports
from pipeline.batch.state import BatchState, batch_lock

log = logging.getLogger(__name__)

# A job whose worker process died (a crash, the kernel's out-of-memory killer) is handed out this many
# times in one run before it is recorded failed; every job the broken pool was running is handed out again.
MAX_TRIES = 2


def default_workers() -> int:
    """Half the CPU cores (each job spreads over a few threads), at most 4, at least 1."""
    return max(1, min((os.cpu_count() or 2) // 2, 4))


def gpu_ids() -> list[str]:
    """The ids of this machine's visible CUDA GPUs (as ``CUDA_VISIBLE_DEVICES`` names them)."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return names[:count] if names else [str(i) for i in range(count)]


@dataclass
class BatchResult:
    jobs: list[dict[str, Any]]
    problems: list[str]
    exit_code: int
    ran: int = 0
    report: list[Path] = field(default_factory=list)


class LocalPool:
    """Jobs on a ``ProcessPoolExecutor`` of spawned processes (a fork of a process with threads is unsafe)."""

    def __init__(self, workers: int, gpus: list[str] | None = None) -> None:
        self.workers = workers
        self.window = workers
        self.gpus = gpus or []
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        devices = None
        if self.gpus:  # one GPU a worker, in turn (more workers than GPUs share them)
            devices = context.Queue()
            for i in range(self.workers):
                devices.put(self.gpus[i % len(self.gpus)])
        return ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=worker_init, initargs=(devices,)
        )

    def submit(self, job: dict[str, Any], log_path: str) -> Future:
        return self.pool.submit(run_job, job, log_path)

    def wait(self, handles: Iterable[Future]) -> list[tuple[Future, dict[str, Any] | None]]:
        """The finished handles with their results (None: the worker died; its job may go out again)."""
        done, _ = wait(list(handles), return_when=FIRST_COMPLETED)
        results = []
        broken = False
        for future in done:
            try:
                results.append((future, future.result()))
            except BrokenProcessPool:
                broken = True
                results.append((future, None))
        if broken:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
        return results

    def close(self, now: bool = False) -> None:
        if now:  # stopped: end the workers rather than wait for their jobs (those are redone next run)
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # SIGINT first: the job unwinds and removes its temporaries
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGINT)
            deadline = time.monotonic() + 10
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
        else:
            self.pool.shutdown(wait=True)


def _show(bar, done: int, failed: int, running: dict) -> None:
    lines = ", ".join(str(j.line) for j in sorted(running.values(), key=lambda j: j.line)[:8])
    bar.set_postfix_str(f"{done} done, {failed} failed" + (f"; running line(s) {lines}" if lines else ""))


def drive(todo: list[Job], state: BatchState, root: Path, pool, progress: bool = True) -> int:
    """Hand ``todo`` out to ``pool``, recording each job's state as it goes; returns how many ran."""
    queue = deque(todo)
    running: dict[Any, Job] = {}
    tries: dict[str, int] = {}
    bar = progress_bar(total=len(todo), desc="batch", unit="job", enabled=progress, leave=True)
    done = failed = 0
    stopped = True
    try:
        while queue or running:
            while queue and len(running) < pool.window:
                job = queue.popleft()
                tries[job.id] = tries.get(job.id, 0) + 1
                state.mark_running(job.id)
                running[pool.submit(job.to_dict(), str(root / "logs" / f"{job.id}.log"))] = job
            _show(bar, done, failed, running)
            for handle, result in pool.wait(list(running)):
                job = running.pop(handle)
                if result is None:
                    if tries[job.id] < MAX_TRIES:
                        log.warning(
                            "the worker of job %s (line %d) died; handing it out again", job.id, job.line
                        )
                        queue.append(job)
                        continue
                    result = {
                        "ok": False,
                        "seconds": 0.0,
                        "error": "its worker process died (crash or out of memory)",
                    }
                if result["ok"]:
                    state.mark_done(job.id, result["seconds"], result["size"], result["sha256"])
                    done += 1
                else:
                    state.mark_failed(job.id, result["seconds"], result["error"])
                    failed += 1
                bar.update(1)
                _show(bar, done, failed, running)
        stopped = False
    finally:
        bar.close()
        pool.close(now=stopped)
    return done + failed


def run_batch(
    manifest: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    workers: int | None = None,
    ray: str | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    config: str | None = None,
    sets: list[str] | None = None,
    workspace: str | os.PathLike | None = None,
    progress: bool = True,
    echo=print,
) -> BatchResult:
    """Run (or with ``dry_run`` only check and plan) the manifest's jobs under ``out_root``.

    ``ray``: None for the local pool, ``"local"`` for a Ray runtime started here, else a cluster's address.
    Exit code 0 only when every row is done; invalid rows and failed jobs make it 1.
    """
    root = Path(out_root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    base = base_overrides(config, list(sets or []))
    checked: Manifest = read_manifest(manifest, root, base, workspace)
    problems = [str(p) for p in checked.problems]
    for problem in problems:
        echo(f"invalid row: {problem}")
    invalid = {}
    for line, row in checked.invalid.items():
        why = "; ".join(f"{p.field}: {p.message}" for p in checked.problems if p.line == line)
        invalid[line] = (row.get("kind", "") or "?", row.get("out", ""), why)
    gpus = gpu_ids() if not ray and any(needs_gpu(j.to_dict()) for j in checked.jobs) else []
    workers = workers or (len(gpus) if gpus else default_workers())
    with batch_lock(root):
        state = BatchState(root)
        try:
            todo, why = state.plan(checked.jobs, invalid, retry_failed, dry=dry_run)
            if dry_run:
                for job in checked.jobs:
                    echo(f"line {job.line:>4}  {job.kind:<8} {job.out}: {why[job.id]}")
                echo(f"{len(checked.jobs)} valid row(s), {len(invalid)} invalid; {len(todo)} to run")
                return BatchResult([], problems, 0 if not invalid else 1)
            skipped = len(checked.jobs) - len(todo)
            where = f"Ray ({ray})" if ray else f"{workers} local worker(s)"
            where += f" on GPU(s) {','.join(gpus)}" if gpus else ""
            echo(f"{len(todo)} job(s) to run on {where}; {skipped} skipped; {len(invalid)} invalid row(s)")
            ran = 0
            if todo:
                if ray:
                    from pipeline.batch.ray_runner import RayPool

                    pool = RayPool(ray, workers)
                else:
                    pool = LocalPool(min(workers, len(todo)), gpus)
                start = time.perf_counter()
                ran = drive(todo, state, root, pool, progress)
                log.info("%d job(s) in %.1f s", ran, time.perf_counter() - start)
            jobs = state.jobs()
        finally:
            state.close()
    reports = list(write_reports(root, jobs))
    echo(table(jobs))
    all_done = all(j["state"] == "done" for j in jobs)
    echo(f"{'all done' if all_done else 'not all done'}: {counts_line(jobs)}; report {reports[0]}")
    return BatchResult(jobs, problems, 0 if all_done else 1, ran, reports)


def batch_status(out_root: str | os.PathLike, echo=print) -> int:
    """``talking-portrait batch-status DIR``: the latest run's table from the database; 0 when all done."""
    state = BatchState(Path(out_root), create=False)
    try:
        jobs = state.jobs()
    finally:
        state.close()
    echo(table(jobs))
    all_done = bool(jobs) and all(j["state"] == "done" for j in jobs)
    echo(counts_line(jobs))
    return 0 if all_done else 1
