"""``bench prepare``'s comparison with a bare face-mesh pass, and the prepare audio analysis run beside it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.bench.prepare import ratio_line
from pipeline.prepare import frame_filters


def test_prepare_ratio_line_divides_prepare_wall_by_the_bare_pass():
    bare = {"seconds": 4.0, "loop_s": 3.2, "frames": 627, "startup_s": 0.6}
    line = ratio_line("upscaled 512", 9.0, bare)
    assert line.startswith("upscaled 512: prepare 9.0 s / bare face mesh 4.0 s = 2.25x")
    assert "decode + face-mesh loop alone 3.2 s over 627 frames" in line
    assert "prepare / loop 2.81x" in line


def test_prepare_bare_pass_decodes_the_frames_prepare_stores():
    info = {
        "crop": {"x": 420, "y": 0, "side": 1080},
        "source": {"video": {"width": 1920, "height": 1080}},
    }
    assert frame_filters(info, 512, 25.0) == "fps=25.0,crop=1080:1080:420:0,scale=512:512:flags=area"
    small = {"crop": {"x": 0, "y": 0, "side": 300}, "source": {"video": {"width": 256, "height": 256}}}
    assert frame_filters(small, 512, 25.0, start=100) == (
        "fps=25.0,select=gte(n\\,100),pad=300:300:(ow-iw)/2:(oh-ih)/2,crop=300:300:0:0,"
        "scale=512:512:flags=bicubic"
    )


@pytest.mark.parametrize("frames", [40, 55])
def test_prepare_audio_job_gives_the_features_computed_in_place(demo_speech, frames):
    from motion.audio import load_audio
    from motion.speech_features import compute_speech_features
    from pipeline.prepare_audio import AudioJob

    audio, analysis = AudioJob(demo_speech, 60.0).result()
    here = load_audio(demo_speech, max_seconds=60.0)
    np.testing.assert_array_equal(audio.samples, here.samples)
    assert audio.rate == here.rate
    want = compute_speech_features(here, 25.0, frames)
    got = analysis.for_frames(25.0, frames)
    np.testing.assert_array_equal(got.mel, want.mel)
    np.testing.assert_array_equal(got.phones, want.phones)


def test_prepare_audio_job_that_fails_returns_none(tmp_path):
    from pipeline.prepare_audio import AudioJob

    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"nothing")
    assert AudioJob(bad, 60.0).result() is None


def test_read_ahead_gives_every_frame_in_order_and_stops_when_closed():
    from pipeline.video_io import read_ahead

    closed = []

    def frames():
        try:
            yield from range(50)
        finally:
            closed.append(True)

    assert list(read_ahead(frames(), depth=3)) == list(range(50))
    assert closed == [True]
    early = read_ahead(frames(), depth=3)
    assert next(early) == 0
    early.close()
    assert closed == [True, True]
    unread = read_ahead(frames(), depth=3)
    unread.close()  # before reading anything
    assert closed == [True, True, True]


def test_read_ahead_raises_the_error_of_the_frames_to_the_reader():
    from common.errors import InputError
    from pipeline.video_io import read_ahead

    def frames():
        yield 1
        raise InputError("cannot read video x", "give a video file ffmpeg can decode")

    reader = read_ahead(frames(), depth=2)
    assert next(reader) == 1
    with pytest.raises(InputError, match="cannot read video"):
        next(reader)
