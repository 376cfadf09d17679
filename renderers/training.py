"""Training infrastructure shared by the trained renderers: checkpoints, resume, logs and curves.

A checkpoint folder holds the renderer as :meth:`renderers.base.Renderer.save` writes it (``config.json`` +
``model.safetensors``) plus the training state: ``optimizer.safetensors`` (the optimizer's tensors),
``training_state.json`` (step, optimizer settings, the training config and its log). Each file is written
atomically and ``training_state.json`` last, so a checkpoint is complete whenever that file names its step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.files import atomic_path, write_json

STATE_FILE = "training_state.json"


def save_checkpoint(
    directory: Path, renderer, optimizer: torch.optim.Optimizer, step: int, extra: dict
) -> None:
    """Write the renderer, the optimizer state and ``training_state.json`` (last) into ``directory``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    renderer.save(directory)
    state = optimizer.state_dict()
    tensors = {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    with atomic_path(directory / "optimizer.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(directory / STATE_FILE, {"step": step, "param_groups": state["param_groups"], **extra})


def load_training_state(directory: Path) -> dict[str, Any] | None:
    """The ``training_state.json`` of a checkpoint folder, or None when there is no complete checkpoint."""
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"training state {path} is unreadable ({err})", "delete the folder to train from scratch"
        ) from err


def restore_optimizer(directory: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load the optimizer tensors saved by :func:`save_checkpoint` into ``optimizer``."""
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "optimizer.safetensors"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        per_param.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})


def append_log(path: Path, rows: list[dict[str, float]]) -> None:
    """Append rows to a CSV training log (the header comes from the first row)."""
    if not rows:
        return
    new = not path.is_file()
    with open(path, "a") as f:
        if new:
            f.write(",".join(rows[0]) + "\n")
        for row in rows:
            f.write(",".join(f"{row[k]:.6g}" for k in rows[0]) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (a resumed run rewrites them)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    keep = lines[:1] + [line for line in lines[1:] if float(line.split(",")[0]) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(keep) + "\n")


class TrainingLog:
    """A run's log: ``train_log.csv`` and TensorBoard event files in ``tensorboard/``.

    Rows are held until :meth:`flush`, which the trainer calls when it writes a checkpoint, so the log never
    runs ahead of the checkpoint a resumed run restarts from. ``resume_step`` None starts a fresh log.
    """

    def __init__(self, directory: Path, resume_step: int | None) -> None:
        self.csv = directory / "train_log.csv"
        self.events = directory / "tensorboard"
        if resume_step is None:
            self.csv.unlink(missing_ok=True)
            for old in self.events.glob("events.out.tfevents.*"):
                old.unlink()
        else:
            truncate_log(self.csv, resume_step)
        self.rows: list[dict[str, float]] = []
        self._writer = None

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        from renderers.tensorboard import ScalarWriter

        append_log(self.csv, self.rows)
        if self._writer is None:
            self._writer = ScalarWriter(self.events)
        for row in self.rows:
            self._writer.add_scalars(int(row["step"]), {k: v for k, v in row.items() if k != "step"})
        self._writer.flush()
        self.rows = []

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_log(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV training log."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]]) if len(lines) > 1 else None
    return {h: (values[:, i] if values is not None else np.zeros(0)) for i, h in enumerate(header)}


def plot_curves(log_path: Path, out_path: Path, title: str) -> None:
    """Training curves PNG from a CSV log: every column against ``step``, log scale for losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = read_log(log_path)
    names = [c for c in cols if c != "step"]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.2 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        ok = np.isfinite(cols[name])
        ax.plot(cols["step"][ok], cols[name][ok], lw=1)
        ax.set_ylabel(name)
        if "loss" in name and (cols[name][ok] > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
