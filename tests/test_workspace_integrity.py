"""Workspaces verify themselves: damage to a chunk or file is reported by inspect, refused by train and
repaired by prepare; failed runs leave no stubs and a workspace that was fine stays as it was."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # every test here prepares or copies a prepared workspace


@pytest.mark.parametrize("renderer", ["nerf", "diffusion"])
def test_failed_train_leaves_no_renderer_folder(prepared, tmp_path, renderer):
    from common.config import load_config
    from renderers import registry

    Config, train = registry.entry(renderer).trainer()
    config = load_config(Config, f"{renderer}_tiny.yaml", ["iterations=4", "checkpoint_every=4"])
    out = tmp_path / "renderers" / renderer

    def fail_at_2(step: int) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepared, out, config, on_step=fail_at_2)
    assert not out.exists() and not out.parent.exists()
