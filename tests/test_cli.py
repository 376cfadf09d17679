"""End to end through the CLI: a real portrait and speech clip in, a playable talking video out."""

import cv2
import numpy as np
import pytest

from motion.audio import SAMPLE_RATE, load_audio
from pipeline.cli import main
from pipeline.video_io import probe_video, read_video_frames
from tests.conftest import DEMO_TRANSCRIPT

SIZE = 256


@pytest.fixture(scope="module")
def generated(tmp_path_factory, portrait_path, demo_speech):
    out = tmp_path_factory.mktemp("gen") / "talk.mp4"
    code = main([
        "generate", "--image", str(portrait_path), "--audio", str(demo_speech), "--out", str(out),
        "--size", str(SIZE), "--transcript", DEMO_TRANSCRIPT, "-q", "--save-motion",
    ])  # fmt: skip
    assert code == 0
    return out


@pytest.mark.slow
def test_video_has_audio_duration_size_and_streams(generated, demo_speech):
    info = probe_video(generated)
    audio = load_audio(demo_speech)
    assert (info.width, info.height) == (SIZE, SIZE)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.has_audio and info.audio_codec == "aac"
    assert abs(info.duration - audio.duration) <= 1 / 25 + 1e-6
    assert abs(info.num_frames - round(audio.duration * 25)) <= 1
    assert generated.with_name("talk.config.yaml").is_file()
    assert generated.with_name("talk.motion.npz").is_file()


@pytest.mark.slow
def test_mouth_follows_speech_and_closes_in_silence(generated, demo_speech):
    from motion.audio_features import analyse_audio
    from motion.lip_measures import mouth_opening
    from motion.tracker import track_frames

    frames = np.stack(list(read_video_frames(generated)))
    opening = mouth_opening(track_frames(frames))
    assert not np.isnan(opening).any()
    audio = load_audio(demo_speech)
    voiced = analyse_audio(audio.samples, SAMPLE_RATE).voiced
    t = (np.arange(len(frames)) + 0.5) / 25
    speech = (
        np.interp(t, np.arange(len(voiced)) * len(audio.samples) / SAMPLE_RATE / len(voiced), voiced) > 0.5
    )
    # Silence well away from speech: lead-in, the pause, the tail.
    far = np.convolve(speech.astype(float), np.ones(9), "same") == 0
    assert far.sum() >= 10
    rest = np.median(opening[far])
    assert np.percentile(opening[far], 90) < rest + 0.03, "mouth moves during silence"
    assert np.percentile(opening[speech], 75) > rest + 0.08, "mouth barely opens during speech"
    assert (opening[speech] > rest + 0.05).mean() > 0.3


@pytest.mark.slow
def test_pixels_outside_the_face_barely_change(generated):
    frames = np.stack(list(read_video_frames(generated))).astype(np.int16)
    first = frames[0]
    change = np.abs(frames - first).max(-1).mean(0)  # [H, W] mean change per pixel
    # Corners of the frame (background, shoulders) stay put; the face region moves.
    corner = np.concatenate([change[:40, :40].ravel(), change[-40:, -40:].ravel(), change[-40:, :40].ravel()])
    assert corner.mean() < 2.0
    assert change[SIZE // 3 : 2 * SIZE // 3, SIZE // 3 : 2 * SIZE // 3].mean() > corner.mean() + 1.0


def run(args, tmp_path):
    out = tmp_path / "out.mp4"
    full = ["generate", *args, "--out", str(out), "--size", "128", "-q"]
    return main(full), out


@pytest.fixture()
def bad_files(tmp_path, portrait_path, demo_speech):
    files = {"image": str(portrait_path), "audio": str(demo_speech)}
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    files["text_png"] = str(text)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (300, 1)))
    files["blank"] = str(blank)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.full((40, 40, 3), 128, np.uint8))
    files["tiny"] = str(tiny)
    silent = tmp_path / "silent.wav"
    _write_wav(silent, np.zeros(SAMPLE_RATE * 2, np.float32))
    files["silent"] = str(silent)
    empty = tmp_path / "empty.wav"
    _write_wav(empty, np.zeros(0, np.float32))
    files["empty"] = str(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(40)))
    files["corrupt"] = str(corrupt)
    notaudio = tmp_path / "notes.mp3"
    notaudio.write_text("hello " * 100)
    files["notaudio"] = str(notaudio)
    return files


def _write_wav(path, samples):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((samples * 32767).astype("<i2").tobytes())


@pytest.mark.parametrize(
    "image, audio, extra, message",
    [
        ("blank", "audio", [], "no face found"),
        ("text_png", "audio", [], "not an image"),
        ("tiny", "audio", [], "too small"),
        ("missing.png", "audio", [], "not found"),
        ("image", "silent", [], "silent"),
        ("image", "empty", [], "empty"),
        ("image", "corrupt", [], "cannot read audio"),
        ("image", "notaudio", [], "cannot read audio"),
        ("image", "audio", ["--set", "max_seconds=3"], "over the 3 s limit"),
    ],
)
def test_bad_inputs_fail_clearly_and_leave_nothing(bad_files, tmp_path, capsys, image, audio, extra, message):
    code, out = run(["--image", bad_files.get(image, image), "--audio", bad_files[audio], *extra], tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err.lower(), err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_unwritable_output_is_refused_before_work(bad_files, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["generate", "--image", bad_files["image"], "--audio", bad_files["audio"],
                 "--out", str(blocker / "out.mp4"), "-q"])  # fmt: skip
    assert code == 2 and "error:" in capsys.readouterr().err
    code = main(["generate", "--image", bad_files["image"], "--audio", bad_files["audio"],
                 "--out", str(tmp_path / "out.avi"), "-q"])  # fmt: skip
    assert code == 2 and ".mp4" in capsys.readouterr().err


@pytest.mark.slow
def test_several_faces_takes_the_largest_with_a_warning(tmp_path, portrait, demo_speech, caplog):
    # the small face is the same portrait mirrored, so the video shows which of the two was taken
    small = np.ascontiguousarray(cv2.resize(portrait, (128, 128))[:, ::-1])
    canvas = np.full((256, 384, 3), 90, np.uint8)
    canvas[:, :256] = portrait
    canvas[64:192, 256:] = small
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), canvas[:, :, ::-1])
    code, out = run(["--image", str(path), "--audio", str(demo_speech)], tmp_path)
    assert code == 0 and out.is_file()
    assert any("faces" in r.getMessage() for r in caplog.records)
    first = next(iter(read_video_frames(out))).astype(int)
    large = cv2.resize(portrait, (128, 128), interpolation=cv2.INTER_AREA).astype(int)
    # the first frame is the large face, not its mirror image (mean differences 15.5 and 61 levels measured)
    assert np.abs(first - large).mean() < 0.5 * np.abs(first - large[:, ::-1]).mean()
