"""The web page's command and jobs without a browser (the page itself: test_ui_browser.py)."""

from __future__ import annotations

import sys

import pytest

from common.errors import InputError
from pipeline.cli import main
from pipeline.ui.jobs import Folders, looks_like_image, need


def test_ui_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["ui", "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "error: the web page needs gradio, which is not installed. install it with pip install -e .[ui]."
    )


def test_missing_upload_is_a_clear_message():
    with pytest.raises(InputError) as caught:
        need(None, "portrait photo")
    assert caught.value.message == "no portrait photo was given. upload a portrait photo first."


def test_jobs_write_in_fresh_folders_under_results(tmp_path):
    folders = Folders(tmp_path)
    first, second = folders.new_job("photo"), folders.new_job("photo")
    assert first != second
    assert first.parent == second.parent == tmp_path / "results"
    assert folders.identities == tmp_path / "identities"


def test_preview_only_for_pictures(tmp_path, portrait_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    assert looks_like_image(portrait_path)
    assert not looks_like_image(fake)
