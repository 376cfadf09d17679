"""Training infrastructure shared by the trained renderers: checkpoints, resume, logs and curves.

A checkpoint folder holds the renderer as :meth:`renderers.base.Renderer.save` writes it (``config.json`` +
``model.safetensors``) plus the training state: ``optimizer.safetensors`` (the optimizer's tensors),
``training_state.json`` (step, optimizer settings, the training config and its log). Each file is written
atomically and ``training_state.json`` last, so a checkpoint is complete whenever that file names its step.
The folder itself is made by the first checkpoint: a run that fails before it leaves no empty folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InputError, ResourceError
from common.files import atomic_path, write_json
from common.progress import bar as progress_bar
from common.progress import figures as progress_figures
from renderers.base import Renderer, load_renderer

log = logging.getLogger(__name__)

STATE_FILE = "training_state.json"


@dataclass
class TrainConfig:
    """Settings every trained renderer's run has; each renderer's own settings extend these."""

    iterations: int = 3000
    """Optimisation steps."""
    steps_per_chunk: int = 40
    """Steps spent on one chunk of frames before the next is streamed in."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    eval_every: int = 500
    """Steps between held-out evaluations."""
    eval_frames: int = 4
    """Held-out frames rendered per evaluation."""
    seed: int = 0
    """Seed of every random draw."""
    device: str = "auto"
    """cuda, cpu or auto."""
    mixed_precision: bool = True
    """bfloat16 autocast for the networks on CUDA."""
    max_seconds: float = 0.0
    """When above 0, the run also ends (evaluated and checkpointed like a last step) after the step at which
    its training time, a resumed run's earlier time included, reaches this."""


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


def write_log(path: Path, rows: list[dict[str, float]]) -> None:
    """Write a CSV training log atomically: one column per key any row has (``step`` first), nan where a
    row lacks one (held-out figures exist only on evaluation steps)."""
    columns = ["step"] + [k for k in dict.fromkeys(k for row in rows for k in row) if k != "step"]
    lines = [",".join(columns)]
    lines += [",".join(f"{row.get(k, float('nan')):.6g}" for k in columns) for row in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


class TrainingLog:
    """A run's log: ``train_log.csv`` and TensorBoard event files in ``tensorboard/``.

    Rows are held until :meth:`flush`, which the trainer calls when it writes a checkpoint, so the log never
    runs ahead of the checkpoint a resumed run restarts from. ``resume_step`` None starts a fresh log; a
    resumed one keeps the rows up to that step.
    """

    def __init__(self, directory: Path, resume_step: int | None) -> None:
        self.csv = directory / "train_log.csv"
        self.events = directory / "tensorboard"
        self.written: list[dict[str, float]] = []
        if resume_step is None:
            self.csv.unlink(missing_ok=True)
            for old in self.events.glob("events.out.tfevents.*"):
                old.unlink()
        elif self.csv.is_file():
            self.written = [row for row in read_log_rows(self.csv) if row["step"] <= resume_step]
        self.rows: list[dict[str, float]] = []
        self._writer = None

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        from renderers.tensorboard import ScalarWriter

        self.written += self.rows
        write_log(self.csv, self.written)
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


def read_log_rows(path: Path) -> list[dict[str, float]]:
    """The rows of a CSV training log, each with the columns it has a value in (held-out figures only on
    evaluation steps)."""
    cols = read_log(path)
    return [{k: float(v[i]) for k, v in cols.items() if np.isfinite(v[i])} for i in range(len(cols["step"]))]


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


def scheduled(items: list, step: int, steps_per_item: int, seed: int):
    """The item (a chunk of frames) that training step ``step`` works on: ``steps_per_item`` steps each, all
    items once per epoch in an order drawn from (seed, epoch), so a resumed run draws the same ones."""
    slot = step // steps_per_item
    epoch, pos = divmod(slot, len(items))
    return items[np.random.default_rng([seed, epoch]).permutation(len(items))[pos]]


def spread(items: list, count: int) -> list:
    """Up to ``count`` items evenly spread over ``items``, first and last included."""
    return [items[int(k)] for k in np.linspace(0, len(items) - 1, min(count, len(items)))]


def as_json(data: dict) -> dict:
    """``data`` as it reads back from JSON (tuples become lists), for comparing with a saved state."""
    return json.loads(json.dumps(data))


RUN_LENGTH = ("iterations", "max_seconds", "checkpoint_every", "eval_every")
"""Training settings that say how long a run goes and how often it reports, not what it learns: a run
resumes with other values (``--set iterations=N`` extends a finished run)."""


def _what_it_learns(settings: dict[str, Any]) -> dict[str, Any]:
    train = settings.get("train")
    if not isinstance(train, dict):
        return settings
    return {**settings, "train": {k: v for k, v in train.items() if k not in RUN_LENGTH}}


def resume_state(directory: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The saved training state of ``directory`` when it holds a run with the same ``settings`` (model and
    training config as JSON; the :data:`RUN_LENGTH` ones may differ), None when it holds none; a run with
    other settings is an error."""
    state = load_training_state(directory)
    if state is None:
        return None
    wanted = _what_it_learns(as_json(settings))
    saved = _what_it_learns({key: state.get(key) for key in wanted})
    changed = sorted(key for key, value in wanted.items() if saved[key] != value)
    if changed:
        detail = changed
        if changed == ["train"]:
            detail = sorted(k for k, v in wanted["train"].items() if (saved["train"] or {}).get(k) != v)
        raise InputError(
            f"{directory} holds a run with other settings ({', '.join(detail)} differ)",
            "use the same preset and config to resume (only iterations, max_seconds, checkpoint_every and "
            "eval_every may change), or another output folder",
        )
    return state


def resume(
    directory: Path,
    settings: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    load_weights: Callable[[Renderer], None],
) -> dict[str, Any] | None:
    """Go on from the checkpoint in ``directory`` when it holds a run with these ``settings``: the saved
    renderer is handed to ``load_weights`` (which copies its weights into the live modules) and the
    optimizer's state is restored. Returns the saved state, or None for a new run (see
    :func:`resume_state`)."""
    state = resume_state(directory, settings)
    if state is not None:
        load_weights(load_renderer(directory))
        restore_optimizer(directory, optimizer, state)
        log.info("resuming %s from step %d", directory, state["step"])
    return state


@dataclass
class TrainingRun:
    """What the shared loop needs of one renderer's run.

    Attributes:
        directory: the checkpoint folder.
        renderer: what each checkpoint saves.
        optimizer: saved with it, so a resumed run goes on exactly.
        settings: the model and training settings saved with every checkpoint (see :func:`resume_state`).
        config: the run's length, reporting and seed.
        step: runs optimisation step ``k`` (0-based) and returns its log row (``loss`` and any parts).
        evaluate: held-out figures for the log.
        title: the run's name in the progress bar and on the curves.
        memory: (what a step holds, the setting to lower): the out-of-GPU-memory message, e.g.
            ("4096 rays per step at 512 px", "fewer rays (--set rays_per_batch=2048)").
        resumed: the saved state the run goes on from (:func:`resume`), None for a new run: its step is
            the first step and its training time adds up.
        before_final_checkpoint: called once before the last checkpoint is written.
    """

    directory: Path
    renderer: Renderer
    optimizer: torch.optim.Optimizer
    settings: dict[str, Any]
    config: TrainConfig
    step: Callable[[int], dict[str, float]]
    evaluate: Callable[[], dict[str, float]]
    title: str
    memory: tuple[str, str]
    resumed: dict[str, Any] | None = None
    before_final_checkpoint: Callable[[], None] | None = None

    def out_of_memory(self, step: int, last: int) -> ResourceError:
        held, lower = self.memory
        return ResourceError(
            f"out of GPU memory at step {step} with {held}",
            f"resume with {lower} or a smaller preset (--preset preview); the run continues from its "
            f"checkpoint at step {last}",
        )


def run_training(
    run: TrainingRun, progress: bool = False, on_step: Callable[[int], None] | None = None
) -> None:
    """The loop the trained renderers share: steps, evaluation, log, checkpoints, progress, curves.

    ``on_step(k)`` is called after each step ``k`` (1-based) has been logged and, when due, saved.
    """
    config = run.config
    iterations = config.iterations
    start = int(run.resumed["step"]) if run.resumed is not None else 0
    run_log = TrainingLog(run.directory, start if start else None)
    bar = progress_bar(total=iterations, initial=start, desc=run.title, unit="step", enabled=progress)
    t0 = time.perf_counter() - float((run.resumed or {}).get("seconds", 0.0))
    last_checkpoint = start
    try:
        for k in range(start, iterations):
            try:
                parts = run.step(k)
            except torch.cuda.OutOfMemoryError as err:
                raise run.out_of_memory(k, last_checkpoint) from err
            done = k + 1
            last = done == iterations or 0 < config.max_seconds <= time.perf_counter() - t0
            row = {"step": done, **parts}
            if done % config.eval_every == 0 or last:
                row.update(run.evaluate())
            run_log.add(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            progress_figures(run.title, row)
            if done % config.checkpoint_every == 0 or last:
                if last and run.before_final_checkpoint is not None:
                    run.before_final_checkpoint()
                run_log.flush()
                extra = {**as_json(run.settings), "seconds": time.perf_counter() - t0}
                save_checkpoint(run.directory, run.renderer, run.optimizer, done, extra)
                last_checkpoint = done
            if on_step is not None:
                on_step(done)
            if last:
                break
    finally:
        run_log.close()
        bar.close()
    if run_log.csv.is_file():
        plot_curves(run_log.csv, run.directory / "training_curves.png", run.title)
