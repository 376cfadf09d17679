"""The record of a ``bench gpu`` run: ``report.json`` rewritten atomically as each stage starts and ends,
``bench_gpu.log`` with every line the stages print, and the summary table for BENCHMARKS.md.

A run cut short (the machine taken back, a kill) still leaves every finished stage's figures, and the stage
it was in shows as ``running``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from common.files import write_json


class _Tee:
    """A text stream that writes to the console and to the log file."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


class StageFailed(Exception):
    """A stage that cannot run because one it needs did not finish."""


class BenchReport:
    """``report.json`` and ``bench_gpu.log`` in ``out``; ``header`` (command, date, machine, ...) goes first.

    Each stage is recorded under ``stages[name]`` with ``status`` (running, ok, failed, skipped), ``seconds``
    and its figures, or its ``error``.
    """

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "report.json"
        self.log_path = out / "bench_gpu.log"
        self.data: dict[str, Any] = {**header, "stages": {}, "finished": False}
        self._log = self.log_path.open("w", buffering=1)
        self.write()

    def write(self) -> None:
        write_json(self.path, self.data)

    def say(self, line: str) -> None:
        """Print ``line`` and add it to the log with the time of day."""
        print(line)
        self._log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def update(self, name: str, figures: dict[str, Any]) -> None:
        """Record figures of stage ``name`` while it still runs (a run cut short keeps them)."""
        self.data["stages"][name].update(figures)
        self.write()

    def ok(self, name: str) -> bool:
        """Whether stage ``name`` finished."""
        return self.data["stages"].get(name, {}).get("status") == "ok"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Run a stage: yields the dict its figures go into. What it prints and logs goes to the log too; an
        exception is recorded as the stage's error (a :class:`StageFailed` as skipped) and does not
        propagate, so the next stage runs."""
        figures: dict[str, Any] = {}
        entry: dict[str, Any] = {"status": "running"}
        self.data["stages"][name] = entry
        self.write()
        self.say(f"== {name}")
        handler = logging.StreamHandler(self._log)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, self._log)):
                yield figures
            entry.update(status="ok", **figures)
        except StageFailed as err:
            entry.update(status="skipped", error=str(err))
        except Exception as err:  # any failure of a stage is its figure; the run goes on
            self._log.write(traceback.format_exc())
            entry.update(status="failed", error=f"{type(err).__name__}: {err}", **figures)
        except BaseException:  # a kill or Ctrl-C: the report says where it stopped
            entry["status"] = "interrupted"
            raise
        finally:
            logging.getLogger().removeHandler(handler)
            entry["seconds"] = round(time.perf_counter() - start, 2)
            self.write()
        line = f"   {name}: {entry['status']} in {entry['seconds']:.1f} s"
        self.say(line + (f" ({entry['error']})" if "error" in entry else ""))

    def finish(self, summary: str) -> None:
        """Mark the run finished, and put the summary table at the end of the log."""
        self.data["finished"] = True
        self.write()
        self._log.write(summary + "\n")
        self._log.close()

    def log_file(self) -> TextIO:
        """The open log, for a subprocess's output."""
        self._log.flush()
        return self._log


def summary_table(report: dict[str, Any]) -> str:
    """The run as Markdown table rows for BENCHMARKS.md: date, machine, command, stage, figures."""
    facts = report["machine"]
    where = facts.get("gpu") or "CPU"
    packages = facts["packages"]
    machine = f"{where}, {facts['cores']} CPU cores, torch {packages.get('torch')}"
    lines = [
        f"machine: {facts['machine']}",
        "",
        "| date | machine | command | stage | result |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["stages"].items():
        if entry.get("status") == "ok":
            result = _RESULTS[name](entry)
        else:
            result = f"{entry.get('status')}: {entry.get('error', 'did not finish')}"
        result += f" ({entry.get('seconds', 0):.0f} s)"
        lines.append(f"| {report['date'][:10]} | {machine} | `{report['command']}` | {name} | {result} |")
    return "\n".join(lines)


def _kernels(e: dict[str, Any]) -> str:
    if "hashgrid_build_seconds" not in e:
        return "no CUDA: PyTorch hash-grid reference, dense sampling"
    built = lambda ok, key: f"built in {e[key]:.1f} s" if ok else "did not build"
    return (
        f"hash-grid kernel {built(e['hashgrid_kernel'], 'hashgrid_build_seconds')}; "
        f"nerfacc marcher {built(e['marcher'], 'marcher_build_seconds')}"
    )


def _tests(e: dict[str, Any]) -> str:
    counts = f"{e['passed']} passed, {e['failed']} failed, {e['errors']} errors, {e['skipped']} skipped"
    text = f"`pytest -m gpu`: {counts}"
    return text + (f"; not passed: {', '.join(e['not_passed'])}" if e["not_passed"] else "")


def _diffusion(e: dict[str, Any]) -> str:
    by_size: dict[str, dict[str, float]] = {}
    for key, fps in e["frames_per_second"].items():  # "256px_2steps"
        size, steps = key.removesuffix("steps").split("px_")
        by_size.setdefault(size, {})[steps] = fps
    parts = [
        f"{size} px: {' / '.join(f'{v:.1f}' for v in rates.values())} frames/s at {' / '.join(rates)} steps"
        for size, rates in by_size.items()
    ]
    return f"{e['preset']} net, batch {e['batch']}, {e['sampler']}: " + "; ".join(parts)


def _identity(e: dict[str, Any]) -> str:
    made = (
        f"{e['clip']}, {e['clip_seconds']} s, made in {e['generate_seconds']} s; "
        if "clip_seconds" in e
        else ""
    )
    return (
        f"{made}{e['frames']} frames at {e['size']} px prepared in {e['prepare_seconds']} s "
        f"({e['prepare_fps']} frames/s, {e['holdout_frames']} held out)"
    )


def _nerf_train(e: dict[str, Any]) -> str:
    curve = ", ".join(f"{p['psnr']:.2f} dB at {p['seconds']:.0f} s" for p in e["psnr_holdout"])
    return (
        f"{e['preset']} preset at {e['size']} px, {e['steps']} steps in {e['training_seconds']} s "
        f"({e['steps_per_second']} steps/s, {e['sampling']}, stopped by {e['stopped_by']}); "
        f"held-out PSNR {curve}"
    )


def _nerf_speed(e: dict[str, Any]) -> str:
    encoding = ", ".join(f"{name} {v['forward_backward_mpts_s']:.2f}" for name, v in e["encoding"].items())
    text = f"encoding forward + backward, M points/s: {encoding}"
    if "render" not in e:
        return text + "; render not measured (no trained NeRF)"
    r = e["render"]
    render = (
        f"render at {r['resolution']} px: {r['fps']:.1f} frames/s ({r['sampling']}, {r['frames']} frames)"
    )
    return f"{render}; {text}"


def _dub(e: dict[str, Any]) -> str:
    v = e["eval"]
    return (
        f"`dub --renderer nerf`, {e['frames']} frames in {e['seconds']:.1f} s ({e['frames_per_second']:.1f} "
        f"frames/s, preparing found done); `eval --dub` over {v['seconds']:.1f} s held out: PSNR "
        f"{v['psnr']:.2f} dB, mouth box {v['psnr_mouth']:.2f} dB, "
        f"mouth LMD {v['lmd_mouth_px_at_512']:.2f} px, "
        f"opening correlation {v['mouth_opening_correlation']:.2f} (drawn vs intended "
        f"{v['drawn_vs_intended_correlation']:.2f})"
    )


_RESULTS = {
    "kernels": _kernels,
    "tests": _tests,
    "diffusion": _diffusion,
    "identity": _identity,
    "nerf_train": _nerf_train,
    "nerf_speed": _nerf_speed,
    "dub": _dub,
}
