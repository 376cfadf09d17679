"""Neural radiance field renderer of a trained identity (tri-plane hash grid, expression-conditioned)."""
