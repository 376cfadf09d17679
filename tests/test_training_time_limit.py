"""The training loop's time limit (``max_seconds``): the run ends after the step that reaches it, evaluated
and checkpointed like a last step, and a resumed run counts the time already trained."""

from __future__ import annotations

import json
import time

import torch

from common.config import load_config
from renderers.nerf.renderer import NerfModelConfig, NerfRenderer
from renderers.nerf.train import NerfTrainConfig
from renderers.training import read_log, run_training


def _run(directory, renderer, optimizer, resumed, max_seconds: float, steps: list[int]) -> None:
    def step(k: int) -> dict[str, float]:
        time.sleep(0.01)  # a step that takes time, like a real one
        return {"loss": 1.0 / (k + 1)}

    def out_of_memory(k: int, last: int) -> Exception:
        return RuntimeError(f"out of memory at {k}")

    run_training(
        directory, renderer, optimizer, {"train": {"max_seconds": max_seconds}}, resumed, 10_000, step,
        (1000, 1000), lambda: {"psnr_holdout": 20.0}, "time limit", out_of_memory, on_step=steps.append,
        max_seconds=max_seconds,
    )  # fmt: skip


def test_run_stops_at_its_time_limit_checkpointed_and_a_resumed_run_counts_its_earlier_time(tmp_path):
    tiny = load_config(NerfTrainConfig, "nerf_tiny.yaml")
    renderer = NerfRenderer(NerfModelConfig(network=tiny.network, render=tiny.render))
    optimizer = torch.optim.Adam(renderer.field.parameters())
    steps: list[int] = []
    _run(tmp_path, renderer, optimizer, None, 0.2, steps)  # 10,000 steps would take 100 s
    state = json.loads((tmp_path / "training_state.json").read_text())
    assert 1 <= state["step"] == steps[-1] < 10_000 and state["seconds"] >= 0.2
    log = read_log(tmp_path / "train_log.csv")
    assert log["step"][-1] == state["step"] and log["psnr_holdout"][-1] == 20.0  # evaluated at its last step
    assert (tmp_path / "training_curves.png").is_file()

    more: list[int] = []  # resumed with the limit already reached: one step, then it stops again
    _run(tmp_path, renderer, optimizer, state, state["seconds"], more)
    assert more == [state["step"] + 1]
    resumed = json.loads((tmp_path / "training_state.json").read_text())
    assert resumed["step"] == state["step"] + 1 and resumed["seconds"] > state["seconds"]
