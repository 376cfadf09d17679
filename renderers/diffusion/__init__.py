"""Diffusion renderer of a trained identity: paints the face from a rasterised face-model image."""
