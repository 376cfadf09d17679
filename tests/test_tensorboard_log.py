"""TensorBoard scalar logs: CRC-32C and the Event encoding are pinned to known bytes, logs round-trip, NaN is
left out, a truncated last record is skipped and a corrupted record in the middle is an error."""

from __future__ import annotations

import math
import struct

import pytest

from renderers.tensorboard import (
    FILE_PREFIX,
    ScalarWriter,
    crc32c,
    decode_event,
    encode_event,
    frame_record,
    iter_records,
    masked_crc32c,
    read_scalars,
)


def f32(value: float) -> float:
    """``value`` rounded to float32, as the log stores it."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # RFC 3720 (iSCSI) B.4 vectors
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    # ((0xE3069283 >> 15) | (0xE3069283 << 17)) mod 2**32 = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5
    assert masked_crc32c(b"123456789") == 0xC78AB0E5
    assert masked_crc32c(b"") == 0xA282EAD8


# Event{wall_time: 1.5, step: 3, summary {value {tag: "a", simple_value: 2.0}}}, encoded by hand.
TINY_EVENT = bytes.fromhex(
    "09 000000000000f83f"  # field 1 (wall_time), wire type 1: the double 1.5, little-endian
    "10 03"  # field 2 (step), varint: 3
    "2a 0a"  # field 5 (summary), length-delimited, 10 bytes:
    "0a 08"  #   Summary field 1 (value), 8 bytes:
    "0a 01 61"  #     Value field 1 (tag), 1 byte: "a"
    "15 00000040"  #     Value field 2 (simple_value), wire type 5: the float 2.0, little-endian
)


def test_tiny_event_encoding_and_framing_are_pinned(tmp_path):
    assert encode_event(1.5, 3, scalars={"a": 2.0}) == TINY_EVENT
    with ScalarWriter(tmp_path) as writer:
        writer.add_scalars(3, {"a": 2.0}, wall_time=1.5)
    raw = writer.path.read_bytes()
    length = struct.pack("<Q", len(TINY_EVENT))
    assert length == bytes.fromhex("1700000000000000")
    record = length + struct.pack("<I", masked_crc32c(length)) + TINY_EVENT
    record += struct.pack("<I", masked_crc32c(TINY_EVENT))
    assert raw.endswith(record)

    first, second = list(iter_records(writer.path))
    header = decode_event(first)
    assert header["file_version"] == "brain.Event:2"
    assert header["scalars"] == {}
    assert header["wall_time"] > 1e9
    assert second == TINY_EVENT
    assert len(raw) == (12 + len(first) + 4) + len(record)


def test_file_name_follows_tensorboard_naming(tmp_path):
    with ScalarWriter(tmp_path / "logs") as a, ScalarWriter(tmp_path / "logs") as b:
        pass
    assert a.path != b.path
    for writer in (a, b):
        assert writer.path.parent == tmp_path / "logs"
        assert writer.path.name.startswith(FILE_PREFIX)
        stamp, *_, pid, counter = writer.path.name[len(FILE_PREFIX) :].split(".")
        assert stamp.isdigit() and pid.isdigit() and counter.isdigit()


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
        writer.flush()
    assert read_scalars(tmp_path) == written
    assert read_scalars(writer.path) == written
    assert read_scalars(tmp_path)["lr/group0"][-1][1] < 0
    events = [decode_event(d) for d in iter_records(writer.path)][1:]
    assert [e["step"] for e in events] == steps
    assert [e["wall_time"] for e in events] == [1_700_000_000.25 + i for i in range(len(steps))]


def test_negative_step_and_out_of_range_value():
    event = decode_event(encode_event(0.0, -5, scalars={"x": 1e300, "y": -1e300}))
    assert event["step"] == -5
    assert event["scalars"] == {"x": math.inf, "y": -math.inf}


def test_several_files_in_a_folder_read_in_name_order(tmp_path):
    with ScalarWriter(tmp_path) as first:
        first.add_scalars(1, {"loss": 1.0})
    with ScalarWriter(tmp_path) as second:
        second.add_scalars(2, {"loss": 0.5})
    assert sorted([first.path, second.path]) == [first.path, second.path]
    assert read_scalars(tmp_path) == {"loss": [(1, 1.0), (2, 0.5)]}
    assert read_scalars(tmp_path / "missing") == {}


def test_nan_values_are_skipped(tmp_path):
    with ScalarWriter(tmp_path) as writer:
        writer.add_scalars(1, {"loss": float("nan"), "psnr": 20.0})
        size = writer.path.stat().st_size
        writer.add_scalars(2, {"loss": float("nan")})
        writer.add_scalars(3, {})
        assert writer.path.stat().st_size == size
        writer.add_scalars(4, {"loss": 0.5, "inf": math.inf})
    assert read_scalars(tmp_path) == {"psnr": [(1, 20.0)], "loss": [(4, 0.5)], "inf": [(4, math.inf)]}
    assert len(list(iter_records(writer.path))) == 3


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 20, 30])
def test_truncated_last_record_is_skipped(tmp_path, cut):
    with ScalarWriter(tmp_path) as writer:
        for step in range(5):
            writer.add_scalars(step, {"loss": float(step), "neg": -float(step)})
    raw = writer.path.read_bytes()
    assert cut < len(frame_record(encode_event(0.0, 4, scalars={"loss": 4.0, "neg": -4.0})))
    writer.path.write_bytes(raw[:-cut])
    assert read_scalars(tmp_path) == {
        "loss": [(s, float(s)) for s in range(4)],
        "neg": [(s, -float(s)) for s in range(4)],
    }


def test_flipped_byte_in_the_middle_raises(tmp_path):
    with ScalarWriter(tmp_path) as writer:
        for step in range(5):
            writer.add_scalars(step, {"loss": float(step)})
    raw = writer.path.read_bytes()
    assert read_scalars(tmp_path)["loss"][-1] == (4, 4.0)
    sizes = [len(data) for data in iter_records(writer.path)]
    start = sum(12 + n + 4 for n in sizes[:3])  # the third step's record, with two records after it
    data_start, data_end = start + 12, start + 12 + sizes[3]
    # in its length, the length's CRC, the wall time, the float value (last data byte), the data's CRC
    for offset in (start + 1, start + 9, data_start + 3, data_end - 1, data_end + 2):
        corrupt = bytearray(raw)
        corrupt[offset] ^= 0x40
        writer.path.write_bytes(bytes(corrupt))
        with pytest.raises(ValueError, match="CRC mismatch"):
            read_scalars(tmp_path)


def test_writer_appends_and_closes(tmp_path):
    writer = ScalarWriter(tmp_path)
    writer.add_scalars(1, {"a": 1.0})
    writer.flush()
    assert read_scalars(tmp_path) == {"a": [(1, 1.0)]}
    writer.close()
    writer.close()
    with pytest.raises(ValueError):
        writer.add_scalars(2, {"a": 2.0})


def test_protobuf_runtime_decodes_the_events(tmp_path):
    """The protobuf library (a dependency of the project, not of this module) parses what is written with a
    descriptor that mirrors the fields of tensorflow's Event, Summary and Summary.Value."""
    descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
    from google.protobuf import descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="tp_event_test.proto", package="tptest", syntax="proto3")
    value = proto.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    summary = proto.message_type.add(name="Summary")
    summary.field.add(
        name="value", number=1, type=F.TYPE_MESSAGE, type_name=".tptest.Value", label=F.LABEL_REPEATED
    )
    event = proto.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    event.field.add(
        name="summary", number=5, type=F.TYPE_MESSAGE, type_name=".tptest.Summary", label=F.LABEL_OPTIONAL
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    Event = message_factory.GetMessageClass(pool.FindMessageTypeByName("tptest.Event"))

    with ScalarWriter(tmp_path) as writer:
        writer.add_scalars(2**40, {"loss": -0.125, "psnr": 31.5}, wall_time=1234.5)
        writer.add_scalars(-3, {"x": 1.0}, wall_time=0.25)
    header, first, second = (Event.FromString(data) for data in iter_records(writer.path))
    assert header.file_version == "brain.Event:2"
    assert (first.wall_time, first.step) == (1234.5, 2**40)
    assert [(v.tag, v.simple_value) for v in first.summary.value] == [("loss", -0.125), ("psnr", 31.5)]
    assert (second.wall_time, second.step) == (0.25, -3)
    # and the other way: what protobuf serializes decodes the same
    assert decode_event(first.SerializeToString())["scalars"] == {"loss": -0.125, "psnr": 31.5}
    assert first.SerializeToString() == encode_event(1234.5, 2**40, scalars={"loss": -0.125, "psnr": 31.5})


def test_tensorboard_reads_the_file(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with ScalarWriter(tmp_path) as writer:
        for step in range(3):
            writer.add_scalars(step * 10, {"loss": 1.0 - 0.25 * step, "lr": -1e-3})
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "lr"}
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(0, 1.0), (10, 0.75), (20, 0.5)]
    assert [e.value for e in acc.Scalars("lr")] == [pytest.approx(-1e-3)] * 3
