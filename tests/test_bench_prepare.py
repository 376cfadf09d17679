"""``bench prepare``'s comparison with a bare face-mesh pass."""

from __future__ import annotations

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
