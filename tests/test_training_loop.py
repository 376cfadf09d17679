"""The loop every trained renderer shares: checkpoints, the out-of-memory advice, the resumed step and the
time limit."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from common.errors import ResourceError
from renderers.training import TrainConfig, TrainingRun, load_training_state, read_log, run_training


class Weights:
    """The least a checkpoint saves: a renderer's ``save``."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def save(self, directory):
        np.save(directory / "weights.npy", self.module.weight.detach().numpy())


def make_run(tmp_path, fail_at=None, resumed=None, iterations=6, max_seconds=0.0, step_seconds=0.0):
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)

    def step(k: int) -> dict[str, float]:
        time.sleep(step_seconds)  # a step that takes time, like a real one
        if k == fail_at:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        loss = module(torch.ones(1, 2)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    return TrainingRun(
        directory=tmp_path,
        renderer=Weights(module),
        optimizer=optimizer,
        settings={"model": {"width": 2}, "train": {"lr": 0.1}},
        config=TrainConfig(iterations=iterations, checkpoint_every=2, eval_every=3, max_seconds=max_seconds),
        step=step,
        evaluate=lambda: {"psnr_holdout": 20.0},
        title="test run",
        memory=("8 frames per step", "a smaller batch (--set batch_size=4)"),
        resumed=resumed,
    )


def test_checkpoints_and_evaluations_come_when_due(tmp_path):
    seen = []
    run_training(make_run(tmp_path), on_step=seen.append)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert load_training_state(tmp_path)["step"] == 6
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["step", "loss", "psnr_holdout"]
    held_out = [r.split(",")[0] for r in rows[1:] if r.split(",")[2] != "nan"]
    assert held_out == ["3", "6"]


def test_out_of_memory_names_the_step_the_checkpoint_and_the_setting(tmp_path):
    with pytest.raises(ResourceError) as caught:
        run_training(make_run(tmp_path, fail_at=3))
    problem, fix = caught.value.problem, caught.value.fix
    assert "out of GPU memory at step 3 with 8 frames per step" in problem
    assert "--set batch_size=4" in fix and "checkpoint at step 2" in fix
    assert load_training_state(tmp_path)["step"] == 2


def test_a_resumed_run_starts_at_its_saved_step(tmp_path):
    run_training(make_run(tmp_path, fail_at=None))
    state = load_training_state(tmp_path)
    run = make_run(tmp_path, resumed={**state, "step": 4})
    seen = []
    run_training(run, on_step=seen.append)
    assert seen == [5, 6]


def test_a_run_stops_at_its_time_limit_checkpointed_and_a_resumed_run_counts_its_earlier_time(tmp_path):
    steps: list[int] = []  # 10,000 steps of 10 ms would take 100 s
    run_training(
        make_run(tmp_path, iterations=10_000, max_seconds=0.2, step_seconds=0.01), on_step=steps.append
    )
    state = load_training_state(tmp_path)
    assert 1 <= state["step"] == steps[-1] < 10_000 and state["seconds"] >= 0.2
    log = read_log(tmp_path / "train_log.csv")
    assert log["step"][-1] == state["step"] and log["psnr_holdout"][-1] == 20.0  # evaluated at its last step
    assert (tmp_path / "training_curves.png").is_file()

    more: list[int] = []  # resumed with the limit already reached: one step, then it stops again
    run = make_run(
        tmp_path, resumed=state, iterations=10_000, max_seconds=state["seconds"], step_seconds=0.01
    )
    run_training(run, on_step=more.append)
    assert more == [state["step"] + 1]
    resumed = load_training_state(tmp_path)
    assert resumed["step"] == state["step"] + 1 and resumed["seconds"] > state["seconds"]
