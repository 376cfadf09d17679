"""Which torch device a renderer runs on."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """``"auto"``: CUDA when a GPU is present, else the CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
