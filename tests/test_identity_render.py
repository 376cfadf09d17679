"""Speech motion adapted to a trained identity: magnitudes matched to the person, never past what the
renderer saw."""

from __future__ import annotations

import numpy as np

from motion.blendshapes import EXPRESSION_NAMES
from pipeline.drive import adapt_to_identity, within_trained_range
from pipeline.identity_render import parse_background


def test_sparse_mouth_coefficients_are_scaled_by_their_active_values_and_bounded():
    names = EXPRESSION_NAMES
    k = names.index("lower_lip_in")
    j = names.index("jaw_open")
    rng = np.random.default_rng(0)
    predicted = np.zeros((200, len(names)), np.float32)
    predicted[[20, 21, 90, 150], k] = [0.05, 0.1, 0.08, 0.06]  # an f here and there: p95 over all frames is 0
    predicted[:, j] = rng.uniform(0.0, 0.6, 200)
    tracked = np.zeros((300, len(names)), np.float32)
    tracked[::10, k] = 0.2
    tracked[:, j] = rng.uniform(0.0, 0.3, 300)
    out = adapt_to_identity(predicted, names, tracked)
    assert out[:, k].max() <= 4 * predicted[:, k].max() + 1e-6  # bounded gain, no blow-up
    assert out[:, k].max() > predicted[:, k].max()  # but scaled up toward this person's range
    np.testing.assert_allclose(np.percentile(out[out[:, j] > 0.02, j], 90), 0.27, atol=0.03)
    clipped = within_trained_range(out * 3, tracked)
    assert (clipped <= tracked.max(0) + 1e-6).all() and (clipped >= tracked.min(0) - 1e-6).all()


def test_background_setting():
    assert parse_background("") is None
    assert parse_background("#00b140") == (0, 177, 64)
    assert parse_background("10, 20,30") == (10, 20, 30)
