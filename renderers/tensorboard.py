"""Scalar logs that TensorBoard reads, written without TensorFlow, TensorBoard or a protobuf library.

An event file (``events.out.tfevents.{time}.{host}.{pid}.{n}``, the name ``tensorboard --logdir`` looks for)
is a sequence of TFRecords. Each record is framed as::

    uint64 length (LE) | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data

where the mask is ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32) and CRC-32C is the Castagnoli CRC.
The data of each record is a serialized ``tensorflow.Event`` protobuf, of which this module uses::

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

The first record of a file is an Event holding only ``wall_time`` and ``file_version = "brain.Event:2"``;
every later one holds one step's scalars. :class:`ScalarWriter` writes each step as whole records in one
``write()``, so a killed process leaves at most a truncated last record, which :func:`read_scalars` skips.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from pathlib import Path

FILE_PREFIX = "events.out.tfevents."
FILE_VERSION = "brain.Event:2"

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_file_counter = itertools.count()


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """The CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of ``data``."""
    table = _CRC32C_TABLE
    crc = _U32
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
    """The CRC-32C of ``data`` masked as TFRecord framing stores it."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def frame_record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# --- protobuf wire format (encoding) ------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """A base-128 varint; a negative int64 is written as its 64-bit two's complement (10 bytes)."""
    value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _float32(value: float) -> bytes:
    """``value`` as a little-endian float32; a finite value beyond its range becomes ±inf (as a cast does)."""
    try:
        return struct.pack("<f", value)
    except OverflowError:
        return struct.pack("<f", math.copysign(math.inf, value))


def encode_event(
    wall_time: float, step: int = 0, file_version: str | None = None, scalars: dict[str, float] | None = None
) -> bytes:
    """A serialized ``tensorflow.Event``: ``wall_time``, ``step`` (omitted when 0, as protobuf does) and
    either ``file_version`` or a Summary of ``scalars`` (tag -> value, stored as float32)."""
    out = _key(1, 1) + struct.pack("<d", wall_time)
    if step:
        out += _key(2, 0) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars is not None:
        summary = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode()) + _key(2, 5) + _float32(value))
            for tag, value in scalars.items()
        )
        out += _length_delimited(5, summary)
    return out


# --- protobuf wire format (decoding) ------------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes):
    """Yield ``(field number, wire type, value)`` of a message: an int for varints, bytes otherwise.
    Groups (wire types 3 and 4) are not used by the Event proto and are rejected."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire_type == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise ValueError("truncated protobuf field")
        yield field, wire_type, value


def decode_event(data: bytes) -> dict:
    """The fields of a serialized Event this module knows: ``wall_time``, ``step``, ``file_version`` (or
    None) and ``scalars`` (tag -> value of each Summary value holding a ``simple_value``). Unknown fields
    are skipped."""
    event: dict = {"wall_time": 0.0, "step": 0, "file_version": None, "scalars": {}}
    for field, wire_type, value in _fields(data):
        if field == 1 and wire_type == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire_type == 0:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3 and wire_type == 2:
            event["file_version"] = value.decode()
        elif field == 5 and wire_type == 2:
            for vfield, vwire, entry in _fields(value):
                if vfield != 1 or vwire != 2:
                    continue
                tag, scalar = "", None
                for efield, ewire, item in _fields(entry):
                    if efield == 1 and ewire == 2:
                        tag = item.decode()
                    elif efield == 2 and ewire == 5:
                        scalar = struct.unpack("<f", item)[0]
                if scalar is not None:
                    event["scalars"][tag] = scalar
    return event


# --- files --------------------------------------------------------------------------------------------


def iter_records(path: Path | str):
    """Yield the data of each TFRecord of ``path``, checking both CRCs. A truncated last record (a killed
    writer) ends the file quietly; a CRC mismatch in a complete record raises ValueError."""
    path = Path(path)
    buf = path.read_bytes()
    pos = 0
    while pos < len(buf):
        if pos + 12 > len(buf):
            return
        header = buf[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", buf[pos + 8 : pos + 12])
        if length_crc != masked_crc32c(header):
            raise ValueError(f"{path}: length CRC mismatch in the record at byte {pos}")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(buf):
            return
        data = buf[start:end]
        (data_crc,) = struct.unpack("<I", buf[end : end + 4])
        if data_crc != masked_crc32c(data):
            raise ValueError(f"{path}: data CRC mismatch in the record at byte {pos}")
        yield data
        pos = end + 4


def event_files(path_or_dir: Path | str) -> list[Path]:
    """``path_or_dir`` itself when it is a file, else its ``events.out.tfevents.*`` files sorted by name."""
    path = Path(path_or_dir)
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob(FILE_PREFIX + "*") if p.is_file())


def read_scalars(path_or_dir: Path | str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of an event file, or of all event files of a folder (in name order, so in the order
    they were started): tag -> ``[(step, value), ...]`` in the order written. Values are float32, as stored.
    A missing folder or one without event files gives an empty dict."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(path_or_dir):
        for data in iter_records(path):
            try:
                event = decode_event(data)
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}: undecodable event ({err})") from err
            for tag, value in event["scalars"].items():
                scalars.setdefault(tag, []).append((event["step"], value))
    return scalars


class ScalarWriter:
    """Appends scalar summaries to a new event file in ``log_dir`` (created if needed).

    Each :meth:`add_scalars` call writes one Event as one ``write()``; :meth:`flush` pushes the file to
    disk (flush + fsync). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, log_dir: Path | str) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"{FILE_PREFIX}{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
        self.path = self.log_dir / name
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        if self._file.tell() == 0:
            self._file.write(frame_record(encode_event(time.time(), file_version=FILE_VERSION)))
            self.flush()

    def add_scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        """Write the scalars of one step (tag -> value) as one Event; NaN values are left out, and nothing
        is written when none remain. ``wall_time`` defaults to now (seconds since the epoch)."""
        if self._file.closed:
            raise ValueError(f"{self.path} is closed")
        kept = {str(tag): float(value) for tag, value in values.items() if not math.isnan(float(value))}
        if not kept:
            return
        event = encode_event(time.time() if wall_time is None else wall_time, int(step), scalars=kept)
        self._file.write(frame_record(event))

    def flush(self) -> None:
        """Push what was written to disk (flush + fsync)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush and close the file; later calls do nothing."""
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> ScalarWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
