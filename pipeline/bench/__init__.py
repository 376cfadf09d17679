"""Benchmarks behind ``talking-portrait bench``: they print figures; BENCHMARKS.md records them.

One module per benchmark: :mod:`.oneshot` (single-portrait generation), :mod:`.prepare` (identity
preparation), :mod:`.nerf` (hash-grid encoding and NeRF render speed), :mod:`.diffusion` (painting speed),
:mod:`.autoencoder` (latent against pixel diffusion) and :mod:`.gpu` (all of it on a lent GPU, in one
report); :mod:`.measure` holds what they share (the machine line, a timed median).
"""
