"""Scalar logs that TensorBoard reads, written by tensorboardX's event file writer.

Files are named ``events.out.tfevents.{time}.{host}.{pid}.{n}`` (the name ``tensorboard --logdir`` looks
for). Each step is one ``Event`` whose ``Summary`` holds every scalar of that step as a ``simple_value``.

tensorboardX's ``EventsWriter`` is used rather than its ``SummaryWriter``: the SummaryWriter hands events
to a background thread and its ``flush()`` does not wait for the queued ones (only ``close()`` does), so
a run killed after a checkpoint could lose log steps that the checkpoint already covers. ``EventsWriter``
writes in the caller's thread and its ``flush()`` flushes and fsyncs the file.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path

FILE_PREFIX = "events.out.tfevents."

_file_counter = itertools.count()


class ScalarWriter:
    """Appends scalar summaries to a new event file in ``log_dir`` (created if needed).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, log_dir: Path | str) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # EventsWriter names a file by the second and the host and opens it with "wb": the process id and
        # a counter keep two writers started in one second (a run resumed at once) from sharing a file.
        self._events = EventsWriter(
            str(self.log_dir / "events"), filename_suffix=f".{os.getpid()}.{next(_file_counter)}"
        )
        self._closed = False
        self.flush()

    def add_scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        """Write the scalars of one step (tag -> value) as one Event; NaN values are left out, and nothing
        is written when none remain. ``wall_time`` defaults to now (seconds since the epoch)."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        if self._closed:
            raise ValueError(f"the event file writer of {self.log_dir} is closed")
        kept = {str(tag): float(value) for tag, value in values.items() if not math.isnan(float(value))}
        if not kept:
            return
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in kept.items()])
        wall_time = time.time() if wall_time is None else wall_time
        self._events.write_event(Event(wall_time=wall_time, step=int(step), summary=summary))

    def flush(self) -> None:
        """Push what was written to disk (flush + fsync)."""
        if not self._closed:
            self._events.flush()

    def close(self) -> None:
        """Flush and close the file; later calls do nothing."""
        if not self._closed:
            self._events.close()
            self._closed = True

    def __enter__(self) -> ScalarWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
