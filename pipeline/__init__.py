"""Pipeline: the jobs (generate, prepare, render, eval, bench), identity workspaces, the compositor, media
I/O, the CLI and the Python API."""

from common.errors import UserError


def generate(*args, **kwargs):
    """Single-portrait generation; see :func:`pipeline.oneshot.generate`."""
    from pipeline.oneshot import generate as _generate

    return _generate(*args, **kwargs)


__all__ = ["UserError", "generate"]
