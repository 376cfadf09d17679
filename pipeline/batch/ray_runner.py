"""The batch's jobs as Ray tasks: ``talking-portrait batch --ray [ADDRESS]`` (``talking-portrait[ray]``).

The same job semantics as the local pool: the driver (the process running the command) hands the jobs
out, keeps the SQLite state and writes the reports; each task runs :func:`pipeline.batch.jobs.run_job`
and returns its result. Ray reruns a task whose worker was lost (``max_retries``); a job whose task still
fails that way is handed out once more by the driver, then recorded failed. A job that needs a trained
renderer (``render``, a dub with nerf, diffusion or auto) asks for one GPU when the cluster has any.

Shared storage: every input, the identities' folder (``--workspace``) and ``--out-root`` must be at the
same paths on the driver and on every worker node (one shared file system, e.g. NFS, mounted alike), and
the project installed in the same Python on every node. The outputs, their logs and the identity locks
are written by the workers there; the driver only reads the outputs' fingerprints the workers report.
"""

from __future__ import annotations

import os
from typing import Any

from common.errors import UserError
from pipeline.batch.jobs import needs_gpu, run_job

RAY_RETRIES = 2


class RayPool:
    """Jobs on Ray: ``address`` ``"local"`` starts a runtime here with ``workers`` CPUs; else it is the
    address of a running cluster (``auto``, ``ray://host:10001``)."""

    def __init__(self, address: str, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(
                "--ray needs the ray package", "pip install 'talking-portrait[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        env = {"env_vars": {"OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}}
        self.started = not ray.is_initialized()
        if self.started:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, runtime_env=env)
            else:
                ray.init(address=address, log_to_driver=False, runtime_env=env)
        resources = ray.cluster_resources()
        self.gpus = resources.get("GPU", 0) > 0
        self.window = max(1, int(resources.get("CPU", workers)))
        self.task = ray.remote(max_retries=RAY_RETRIES, num_cpus=1)(run_job)

    def submit(self, job: dict[str, Any], log_path: str):
        gpus = 1 if self.gpus and needs_gpu(job) else 0
        return self.task.options(num_gpus=gpus).remote(job, log_path)

    def wait(self, handles: list) -> list[tuple[Any, dict[str, Any] | None]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        rest = [h for h in handles if h not in ready]
        more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
        results = []
        for ref in [*ready, *more]:
            try:
                results.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.RayError:  # the worker was lost more often than Ray retries
                results.append((ref, None))
        return results

    def close(self, now: bool = False) -> None:
        if self.started:
            self.ray.shutdown()
