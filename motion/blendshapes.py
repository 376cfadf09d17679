"""The named expression coefficients shared by every stage.

Names are semantic so that motion predicted for one face drives another. Each coefficient is a weight,
0 at rest and 1 at the full extent of the shape (values a little past 1 are allowed, negative values
mean the opposite motion for the signed shapes: ``brow_up`` < 0 lowers the brows).
"""

from __future__ import annotations

EXPRESSION_NAMES: tuple[str, ...] = (
    "jaw_open",  # lower jaw rotates down, lower lip and chin follow
    "lips_together",  # lips press shut (m, b, p) even when the jaw is slightly open
    "mouth_wide",  # mouth corners stretch sideways (ee, s)
    "pucker",  # lips round and push forward, corners in (oo, w)
    "funnel",  # lips round open (oh, sh)
    "smile_left",  # subject's left mouth corner up and out
    "smile_right",  # subject's right mouth corner up and out
    "upper_lip_up",  # upper lip raises, showing the upper teeth (f, v when paired with lower_lip_in)
    "lower_lip_down",  # lower lip drops away from the teeth
    "lower_lip_in",  # lower lip tucks under the upper teeth (f, v)
    "blink_left",  # subject's left upper eyelid closes
    "blink_right",  # subject's right upper eyelid closes
    "brow_up",  # both brows raise (negative: lower)
    "brow_inner_up",  # inner brows raise (worry, emphasis)
)

EXPRESSION_INDEX: dict[str, int] = {name: i for i, name in enumerate(EXPRESSION_NAMES)}

# Coefficients that shape the mouth: the silence model drives these to rest.
MOUTH_NAMES: tuple[str, ...] = (
    "jaw_open",
    "lips_together",
    "mouth_wide",
    "pucker",
    "funnel",
    "upper_lip_up",
    "lower_lip_down",
    "lower_lip_in",
)
