"""The loop every trained renderer shares: checkpoints, the out-of-memory advice and the resumed step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import ResourceError
from renderers.training import TrainConfig, TrainingRun, load_training_state, run_training


class Weights:
    """The least a checkpoint saves: a renderer's ``save``."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def save(self, directory):
        np.save(directory / "weights.npy", self.module.weight.detach().numpy())


def make_run(tmp_path, fail_at: int | None = None, resumed=None) -> TrainingRun:
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)

    def step(k: int) -> dict[str, float]:
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
        config=TrainConfig(iterations=6, checkpoint_every=2, eval_every=3),
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
