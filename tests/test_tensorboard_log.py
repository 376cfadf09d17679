"""TensorBoard scalar logs: what is written reads back (steps, tags, float32 values, wall times), flushed
steps are on disk before the file is closed, NaN is left out, resumed runs add files read in order, a
truncated last record is skipped and a corrupted one is an error, and TensorBoard's own reader agrees."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from renderers.tensorboard import FILE_PREFIX, ScalarWriter
from renderers.training import TrainingLog
from tests.tensorboard_events import event_files, iter_events, read_scalars


def f32(value: float) -> float:
    """``value`` rounded to float32, as the log stores it."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def only_file(folder):
    (path,) = event_files(folder)
    return path


def test_file_name_follows_tensorboard_naming(tmp_path):
    with ScalarWriter(tmp_path / "logs"), ScalarWriter(tmp_path / "logs"):
        pass
    paths = event_files(tmp_path / "logs")
    assert len(paths) == 2  # two writers started in the same second keep their own files
    for path in paths:
        assert path.name.startswith(FILE_PREFIX)
        stamp, *_, pid, counter = path.name[len(FILE_PREFIX) :].split(".")
        assert stamp.isdigit() and pid.isdigit() and counter.isdigit()
    header = next(iter_events(paths[0]))
    assert header.file_version == "brain.Event:2"
    assert header.wall_time > 1e9


def test_round_trip_of_several_steps_and_tags(tmp_path):
    steps = [0, 1, 7, 2**31 + 5, 2**40 + 3, 2**62]
    written: dict[str, list[tuple[int, float]]] = {}
    with ScalarWriter(tmp_path) as writer:
        for i, step in enumerate(steps):
            values = {"loss": 1.0 / (i + 1), "lr/group0": -3.25e-4 * i, "psnr": -(10.0**i)}
            if i % 2:
                values["sparse"] = 1e30
            writer.add_scalars(step, values, wall_time=1_700_000_000.25 + i)
            for tag, value in values.items():
                written.setdefault(tag, []).append((step, f32(value)))
    path = only_file(tmp_path)
    assert read_scalars(tmp_path) == written
    assert read_scalars(path) == written
    events = list(iter_events(path))[1:]
    assert [e.step for e in events] == steps
    assert [e.wall_time for e in events] == [1_700_000_000.25 + i for i in range(len(steps))]
    assert [len(e.summary.value) for e in events] == [3, 4, 3, 4, 3, 4]  # one event per step


def test_flushed_steps_are_on_disk_before_close(tmp_path):
    writer = ScalarWriter(tmp_path)
    for step in range(30):
        writer.add_scalars(step, {"a": float(step)})
    writer.flush()
    assert read_scalars(tmp_path) == {"a": [(s, float(s)) for s in range(30)]}
    writer.close()
    writer.close()
    with pytest.raises(ValueError):
        writer.add_scalars(31, {"a": 2.0})


def test_nan_values_are_skipped(tmp_path):
    with ScalarWriter(tmp_path) as writer:
        writer.add_scalars(1, {"loss": float("nan"), "psnr": 20.0})
        writer.add_scalars(2, {"loss": float("nan")})
        writer.add_scalars(3, {})
        writer.add_scalars(4, {"loss": 0.5, "inf": math.inf})
    assert read_scalars(tmp_path) == {"psnr": [(1, 20.0)], "loss": [(4, 0.5)], "inf": [(4, math.inf)]}
    assert len(list(iter_events(only_file(tmp_path)))) == 3  # the header and two steps


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 20, 30])
def test_truncated_last_record_is_skipped(tmp_path, cut):
    with ScalarWriter(tmp_path) as writer:
        for step in range(5):
            writer.add_scalars(step, {"loss": float(step), "neg": -float(step)})
    path = only_file(tmp_path)
    last = list(iter_events(path))[-1].ByteSize() + 16
    assert cut < last
    path.write_bytes(path.read_bytes()[:-cut])
    assert read_scalars(tmp_path) == {
        "loss": [(s, float(s)) for s in range(4)],
        "neg": [(s, -float(s)) for s in range(4)],
    }


def test_flipped_byte_in_the_middle_raises(tmp_path):
    with ScalarWriter(tmp_path) as writer:
        for step in range(5):
            writer.add_scalars(step, {"loss": float(step)})
    path = only_file(tmp_path)
    raw = path.read_bytes()
    sizes = [event.ByteSize() for event in iter_events(path)]
    start = sum(12 + n + 4 for n in sizes[:3])  # the third step's record, with two records after it
    data_start, data_end = start + 12, start + 12 + sizes[3]
    # in its length, the length's CRC, the wall time, the float value (last data byte), the data's CRC
    for offset in (start + 1, start + 9, data_start + 3, data_end - 1, data_end + 2):
        corrupt = bytearray(raw)
        corrupt[offset] ^= 0x40
        path.write_bytes(bytes(corrupt))
        with pytest.raises(ValueError, match="CRC mismatch"):
            read_scalars(tmp_path)


def test_training_log_resumes_into_a_second_file_and_a_fresh_run_clears_the_folder(tmp_path):
    log = TrainingLog(tmp_path, resume_step=None)
    for step in (1, 2, 3):
        log.add({"step": step, "loss": 1.0 / step, "psnr_holdout": math.nan if step < 3 else 25.0})
    log.flush()
    log.add({"step": 4, "loss": 0.2})  # added but never flushed: a kill before the next checkpoint
    log.close()

    resumed = TrainingLog(tmp_path, resume_step=3)
    resumed.add({"step": 4, "loss": 0.25})
    resumed.flush()
    resumed.close()
    assert len(event_files(tmp_path / "tensorboard")) == 2
    events = read_scalars(tmp_path / "tensorboard")
    assert events["loss"] == [(1, 1.0), (2, 0.5), (3, f32(1 / 3)), (4, 0.25)]
    assert events["psnr_holdout"] == [(3, 25.0)]

    fresh = TrainingLog(tmp_path, resume_step=None)
    fresh.add({"step": 1, "loss": 2.0})
    fresh.flush()
    fresh.close()
    assert read_scalars(tmp_path / "tensorboard") == {"loss": [(1, 2.0)]}


def test_tensorboard_reads_the_file(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with ScalarWriter(tmp_path) as writer:
        for step in range(3):
            writer.add_scalars(step * 10, {"loss": 1.0 - 0.25 * step, "lr": -1e-3})
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "lr"}
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(0, 1.0), (10, 0.75), (20, 0.5)]
    np.testing.assert_allclose([e.value for e in acc.Scalars("lr")], [-1e-3] * 3, rtol=1e-6)
