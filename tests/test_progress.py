"""Progress bars and stages, and a follower that is told of them (what the web page's job queue uses)."""

from __future__ import annotations

import threading

from common.progress import Stages, bar, figures, following


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stage(self, key, name, done, total, unit):
        self.events.append(("stage", key, name, done, total, unit))

    def stage_ended(self, key):
        self.events.append(("ended", key))

    def figures(self, run, row):
        self.events.append(("figures", run, row))


def test_a_hidden_bar_still_reports_its_stage_and_count(capsys):
    seen = Recorder()
    with following(seen):
        for _ in bar(range(5), desc="render", unit="frame", enabled=False):
            pass
        handmade = bar(total=3, desc="frames", unit="frame", enabled=False)
        handmade.update(2)
        handmade.close()
    stages = [e for e in seen.events if e[0] == "stage"]
    assert stages[0][2:] == ("render", 0, 5, "frame")
    assert ("ended", stages[0][1]) in seen.events
    frames = [e[2:] for e in stages if e[2] == "frames"]
    assert frames[0] == ("frames", 0, 3, "frame") and frames[-1] == ("frames", 2, 3, "frame")
    assert seen.events[-1] == ("ended", stages[-1][1])
    assert capsys.readouterr().err == ""  # nothing on the terminal: the command asked for no progress


def test_without_a_follower_nothing_is_reported_and_a_hidden_bar_is_silent(capsys):
    handmade = bar(total=3, desc="x", enabled=False)
    handmade.update(3)
    handmade.close()
    figures("run", {"step": 1, "loss": 0.5})
    assert capsys.readouterr().err == ""


def test_stages_time_each_stage_and_name_the_current_one():
    seen = Recorder()
    with following(seen):
        stages = Stages()
        stages.start("load")
        stages.start("render")
        seconds = stages.end()
    assert list(seconds) == ["load", "render"]
    assert all(s >= 0 for s in seconds.values())
    names = [e[2] for e in seen.events if e[0] == "stage"]
    assert names == ["load", "render"]
    assert seen.events[-1][0] == "ended"


def test_training_rows_reach_the_follower():
    seen = Recorder()
    with following(seen):
        figures("motion model", {"step": 10, "loss": 0.2, "heldout_opening_r": 0.5})
    assert seen.events == [("figures", "motion model", {"step": 10, "loss": 0.2, "heldout_opening_r": 0.5})]


def test_a_follower_hears_only_its_own_thread():
    seen = Recorder()
    elsewhere: list = []

    def other_thread():
        handmade = bar(total=2, desc="other", enabled=False)
        handmade.update(2)
        handmade.close()
        elsewhere.append(True)

    with following(seen):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert elsewhere and seen.events == []
