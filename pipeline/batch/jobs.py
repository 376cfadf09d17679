"""One batch job in a worker: the project's own job for the row's kind, its log file, the identity lock.

:func:`run_job` takes a job as plain values (what crosses to a worker process or a Ray task) and returns
plain values: never raises for a job that fails (the error is in the result and the job's log).

Rows on the same source video that need a prepared identity (a dub with a trained renderer) share it: the
identity's folder is guarded by an ``fcntl`` lock on ``.<name>.lock`` beside it. The first worker prepares
(and trains) it while holding the lock; a second waits and then finds it done (``prepare`` resumes or
returns what is there, training goes on only when its run stopped early). A ``render`` row takes the same
lock shared, so it never reads an identity that a dub is preparing. The lock lives on the file system:
workers on several machines must see the identities' folder on one shared file system that honours
``flock`` (NFSv4, Lustre, CephFS do; some FUSE mounts do not).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.files import write_json

log = logging.getLogger(__name__)


@contextlib.contextmanager
def identity_lock(folder: str | os.PathLike, shared: bool = False) -> Iterator[float]:
    """Hold the lock of the identity at ``folder`` (exclusive, or ``shared`` for readers); yields the
    seconds waited for it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(folder.with_name(f".{folder.name}.lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - start
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _watch_parent() -> None:
    """End this worker when the process that started it is gone (a batch killed with SIGKILL): its jobs
    are redone by the next run, and a worker left behind would write the same output beside them."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def needs_gpu(job: dict[str, Any]) -> bool:
    """Whether a job runs a trained or diffusion renderer (on a GPU where there is one)."""
    renderer = job["config"].get("renderer")
    if job["kind"] == "render":
        return True
    return renderer != "warp"


def worker_init(devices=None) -> None:
    """Start of each local worker process. ``devices``: a queue of GPU ids, one taken by each worker (set
    before anything loads CUDA, so the worker's jobs all run on that GPU)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices.get(timeout=60)
    # SIGINT from the driver (or Ctrl-C) unwinds the job, removing its temporaries, even where the batch
    # was started with SIGINT ignored (a background job of a shell script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _watch_parent()


@contextlib.contextmanager
def _job_log(path: Path) -> Iterator[logging.Handler]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def run_job(job: dict[str, Any], log_path: str) -> dict[str, Any]:
    """Run ``job`` (a :class:`pipeline.batch.manifest.Job` as a dict); its log goes to ``log_path``.

    Returns ``{"id", "ok", "seconds", "size", "sha256"}`` or ``{"id", "ok": False, "seconds", "error"}``.
    """
    from pipeline.batch.state import output_fingerprint

    start = time.perf_counter()
    with _job_log(Path(log_path)):
        log.info("job %s (line %d): %s -> %s", job["id"], job["line"], job["kind"], job["out_path"])
        try:
            _run(job)
            size, sha = output_fingerprint(job["out_path"])
            seconds = time.perf_counter() - start
            # the note that this job is finished, for a driver killed before it records the result
            note = {"size": size, "sha256": sha, "seconds": seconds}
            write_json(Path(log_path).with_name(f"{job['id']}.done.json"), note)
        except UserError as err:
            log.error("failed: %s", err.message)
            return {
                "id": job["id"],
                "ok": False,
                "seconds": time.perf_counter() - start,
                "error": err.message,
            }
        except Exception as err:
            log.error("failed:\n%s", traceback.format_exc())
            message = f"{type(err).__name__}: {err}".strip()
            return {"id": job["id"], "ok": False, "seconds": time.perf_counter() - start, "error": message}
        log.info("done in %.1f s: %d bytes, sha256 %s", seconds, size, sha)
    return {"id": job["id"], "ok": True, "seconds": seconds, "size": size, "sha256": sha}


def _run(job: dict[str, Any]) -> None:
    from pipeline.batch.manifest import job_config

    config = job_config(job)
    inputs = job["inputs"]
    kind = job["kind"]
    workspace = job.get("workspace")
    if kind == "generate":
        from pipeline.oneshot import generate

        generate(
            inputs["image"], inputs["audio"], job["out_path"], transcript=job["transcript"], config=config
        )
        return
    from pipeline.workspace import identity_dir

    if kind == "render":
        from pipeline.identity_render import render_identity

        with identity_lock(identity_dir(inputs["identity"], workspace), shared=True):
            render_identity(
                inputs["identity"], inputs["audio"], job["out_path"], workspace, config, job["transcript"]
            )
        return
    from pipeline.dub import dub, resolve_renderer
    from pipeline.dub_trained import identity_name

    def run() -> None:
        dub(inputs["video"], inputs["audio"], job["out_path"], config=config, transcript=job["transcript"],
            workspace=workspace)  # fmt: skip

    if resolve_renderer(config.renderer) == "warp":
        run()
        return
    # the trained paths prepare (and train) the video's identity inside dub: one worker at a time per identity
    from pipeline.workspace import IDENTITY_FILE

    name = config.identity or identity_name(inputs["video"])
    folder = identity_dir(name, workspace)
    with identity_lock(folder) as waited:
        found = (folder / IDENTITY_FILE).is_file()
        log.info(
            "identity %s: %s (waited %.1f s for its lock)",
            name,
            "found, reused" if found else "preparing",
            waited,
        )
        run()
