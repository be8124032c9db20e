from __future__ import annotations

from pathlib import Path

import pytest

from optout_guard.config import Settings, load_settings
from optout_guard.errors import ConfigError


def test_defaults_without_config(tmp_path):
    s = load_settings(tmp_path, environ={})
    assert s == Settings(workspace=tmp_path)
    assert s.index_file == tmp_path / ".optout-guard" / "index.npz"
    assert s.enrollments == tmp_path / "enrollments"


def test_layers_config_then_environment_then_flags(tmp_path):
    (tmp_path / "config.toml").write_text(
        '[optout_guard]\nblock_distance = 0.30\nreview_distance = 0.55\nmin_face_px = 48\nindex_path = "state/idx.npz"\n'
    )
    s = load_settings(tmp_path, environ={})
    assert (s.block_distance, s.review_distance, s.min_face_px) == (0.30, 0.55, 48)
    assert s.index_file == tmp_path / "state" / "idx.npz"  # relative to the workspace

    env = {"OPTOUT_GUARD_BLOCK_DISTANCE": "0.35", "OPTOUT_GUARD_DETECTOR": "hog"}
    s = load_settings(tmp_path, environ=env)
    assert (s.block_distance, s.detector) == (0.35, "hog")

    s = load_settings(tmp_path, overrides={"block_distance": 0.25, "detector": None}, environ=env)
    assert (s.block_distance, s.detector) == (0.25, "hog")


def test_workspace_from_environment(tmp_path):
    s = load_settings(None, environ={"OPTOUT_GUARD_WORKSPACE": str(tmp_path)})
    assert s.workspace == Path(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("block_distance = 0.7\nreview_distance = 0.5\n", "must be > 0 and <= review_distance"),
        ("detector = 'magic'\n", "detector must be one of"),
        ("threshold = 0.5\n", "unknown setting 'threshold'"),
        ("min_face_px = 'big'\n", "bad value"),
        ("block_distance = \n", "not valid TOML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, environ={})


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="OPTOUT_GUARD_REVIEW_DISTANCE"):
        load_settings(tmp_path, environ={"OPTOUT_GUARD_REVIEW_DISTANCE": "far"})
