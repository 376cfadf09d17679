"""The batch's summary: a table on the terminal, ``report.csv`` and ``report.json`` under the output root."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from common.files import write_json, write_text
from pipeline.batch.state import STATES

FIELDS = ("line", "kind", "out", "state", "attempts", "seconds", "size", "sha256", "error", "log", "id")


def _row(job: dict[str, Any]) -> dict[str, Any]:
    return {k: ("" if job.get(k) is None else job[k]) for k in FIELDS}


def write_reports(root: Path, jobs: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``report.csv`` and ``report.json`` (atomically) from the jobs' records."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for job in jobs:
        writer.writerow(_row(job))
    counts = count(jobs)
    csv_path = write_text(root / "report.csv", buffer.getvalue())
    json_path = write_json(root / "report.json", {"counts": counts, "jobs": [_row(j) for j in jobs]})
    return csv_path, json_path


def count(jobs: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for job in jobs:
        counts[job["state"]] += 1
    return counts


def counts_line(jobs: list[dict[str, Any]]) -> str:
    counts = count(jobs)
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no jobs"


def table(jobs: list[dict[str, Any]], width: int = 60) -> str:
    """One line a job: line, kind, state, attempts, seconds, output, and the error when there is one."""
    lines = [f"{'line':>5}  {'kind':<8} {'state':<8} {'tries':>5} {'seconds':>8}  out"]
    for job in jobs:
        seconds = f"{job['seconds']:.1f}" if job.get("seconds") is not None else "-"
        lines.append(
            f"{job['line']:>5}  {job['kind']:<8} {job['state']:<8} {job['attempts']:>5} {seconds:>8}  "
            f"{job['out']}"
        )
        if job.get("error"):
            error = str(job["error"]).replace("\n", " ")
            lines.append(f"{'':>7}{error[: width * 2]}")
    return "\n".join(lines)
