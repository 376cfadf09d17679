"""Progress of long stages: the terminal's bars, and whoever follows a run from elsewhere (the web page).

Every long loop in the project makes its bar with :func:`bar` and every training run reports its logged rows
with :func:`figures`. On a terminal a bar is a tqdm bar on stderr, shown when the command asked for progress.
Code that runs a job for someone else (the web page's job queue) wraps it in :func:`following`: within that
block (the same thread) each bar reports its stage name and count to the follower, shown or not, and each
training row reaches it too, for a live curve.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

from tqdm import tqdm


class Follower(Protocol):
    """Who follows a run: told of each bar's progress and of each training run's logged figures.

    :meth:`stage` and :meth:`figures` may raise to stop the run (the web page's Stop button): the exception
    comes out where the run reports its progress, and unwinds it as Ctrl-C would.
    """

    def stage(self, key: int, name: str, done: float, total: float | None, unit: str) -> None:
        """Bar ``key`` (unique while it lives) named ``name`` is at ``done`` of ``total``."""

    def stage_ended(self, key: int) -> None:
        """Bar ``key`` was closed."""

    def figures(self, run: str, row: dict[str, float]) -> None:
        """Training run ``run`` logged ``row`` (its ``step``, losses and, on evaluation steps, held-out
        figures)."""


_follower: ContextVar[Follower | None] = ContextVar("progress_follower", default=None)


class _Nowhere:
    """A stream for bars nobody sees on the terminal but a follower reads."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _Bar(tqdm):
    """A tqdm bar that also tells the thread's follower (if any) where it stands."""

    def __init__(self, *args: Any, follower: Follower | None = None, **kwargs: Any) -> None:
        self._follower = follower
        super().__init__(*args, **kwargs)
        self._tell()

    def _tell(self) -> None:
        if self._follower is not None:
            self._follower.stage(id(self), self.desc or "working", self.n, self.total, self.unit)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        self._tell()
        return shown

    def reset(self, total: float | None = None) -> None:
        super().reset(total)
        self._tell()

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        super().refresh(*args, **kwargs)
        self._tell()

    def close(self) -> None:
        # no last report here: close also runs while a stop unwinds the run, and when the bar is collected
        follower, self._follower = getattr(self, "_follower", None), None
        super().close()
        if follower is not None:
            follower.stage_ended(id(self))


def bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    initial: float = 0,
    leave: bool = False,
) -> tqdm:
    """A progress bar over ``iterable`` (or one updated by hand): on stderr when ``enabled``; reported to the
    thread's follower whether shown or not."""
    follower = _follower.get()
    settings = dict(total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    if follower is None:
        return tqdm(iterable, disable=not enabled, **settings)
    hidden = {} if enabled else dict(file=_Nowhere(), mininterval=0.25)
    return _Bar(iterable, follower=follower, **settings, **hidden)


def figures(run: str, row: dict[str, float]) -> None:
    """Tell the thread's follower (if any) that training run ``run`` logged ``row``."""
    follower = _follower.get()
    if follower is not None:
        follower.figures(run, dict(row))


@contextlib.contextmanager
def following(follower: Follower) -> Iterator[None]:
    """Within this block (this thread), every bar and training row is reported to ``follower``."""
    token = _follower.set(follower)
    try:
        yield
    finally:
        _follower.reset(token)


class Stages:
    """A job's consecutive named stages: each one's seconds, and the current one's name told to the thread's
    follower (a stage has no count; bars within it are shown under it).

    ``start(name)`` ends the stage before (its seconds go to :attr:`seconds`) and begins ``name``; ``end()``
    ends the last one.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._began = 0.0
        self._follower = _follower.get()

    def start(self, name: str) -> None:
        self._finish()
        self._name, self._began = name, time.perf_counter()
        if self._follower is not None:
            self._follower.stage(id(self), name, 0, None, "")

    def end(self) -> dict[str, float]:
        """End the last stage; the seconds of every stage."""
        self._finish()
        if self._follower is not None:
            self._follower.stage_ended(id(self))
        return self.seconds

    def _finish(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._began
            self._name = None
