"""Reads back the scalars of TensorBoard event files, for tests (tensorboardX writes but has no reader).

An event file is a sequence of TFRecords: ``uint64 length | uint32 masked CRC-32C of the length | data |
uint32 masked CRC-32C of the data``, each data a serialized ``Event``; parsed with tensorboardX's own
``Event`` message and checked with its ``masked_crc32c``.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

FILE_PREFIX = "events.out.tfevents."


def event_files(path_or_dir: Path | str) -> list[Path]:
    """``path_or_dir`` itself when it is a file, else its ``events.out.tfevents.*`` files sorted by name."""
    path = Path(path_or_dir)
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob(FILE_PREFIX + "*") if p.is_file())


def iter_events(path: Path | str):
    """Yield each ``Event`` of ``path``, checking both CRCs. A truncated last record (a killed writer) ends
    the file quietly; a CRC mismatch in a complete record raises ValueError."""
    buf = Path(path).read_bytes()
    pos = 0
    while pos + 12 <= len(buf):
        header = buf[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", buf[pos + 8 : pos + 12])
        if length_crc != masked_crc32c(header):
            raise ValueError(f"{path}: length CRC mismatch in the record at byte {pos}")
        end = pos + 12 + length
        if end + 4 > len(buf):
            return
        data = buf[pos + 12 : end]
        if struct.unpack("<I", buf[end : end + 4])[0] != masked_crc32c(data):
            raise ValueError(f"{path}: data CRC mismatch in the record at byte {pos}")
        yield Event.FromString(data)
        pos = end + 4


def read_scalars(path_or_dir: Path | str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of an event file, or of all event files of a folder in name order (the order they were
    started): tag -> ``[(step, value), ...]`` in the order written, values float32 as stored."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(path_or_dir):
        for event in iter_events(path):
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars
