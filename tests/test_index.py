"""The persisted gallery: private, stamped, atomic, and forgetting a student for real."""

from __future__ import annotations

import base64
import json
import stat

import numpy as np
import pytest

from optout_guard.errors import IndexUnusable
from optout_guard.index import FaceIndex, Rejection, Template

FP = "dlib-resnet-v1:test+sp5:test"


def filled(n_students: int = 3, per_student: int = 2) -> FaceIndex:
    rng = np.random.default_rng(42)
    index = FaceIndex(FP)
    for s in range(n_students):
        for k in range(per_student):
            index.add(
                Template(f"s{s}", f"/refs/s{s}/{k}.jpg", f"{s:032x}{k:032x}", "2026-09-01T00:00:00+00:00"), rng.normal(size=128)
            )
    index.reject(Rejection("s9", "/refs/s9/group.jpg", "f" * 64, "2 faces found"))
    return index


def test_round_trip(tmp_path):
    index = filled()
    path = tmp_path / "state" / "index.npz"
    index.save(path)
    back = FaceIndex.load(path, FP)
    assert back.templates == index.templates and back.rejections == index.rejections
    np.testing.assert_array_equal(back.embeddings, index.embeddings)
    assert back.student_ids() == ["s0", "s1", "s2", "s9"] and back.not_protected() == ["s9"]


def test_file_is_private(tmp_path):
    path = tmp_path / "state" / "index.npz"
    filled().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.npz", "index.npz.generation"]  # no temp file left


def test_other_model_is_refused(tmp_path):
    path = tmp_path / "index.npz"
    filled().save(path)
    with pytest.raises(IndexUnusable, match="another face model"):
        FaceIndex.load(path, "some-other-model")


def test_other_format_version_is_refused(tmp_path):
    path = tmp_path / "index.npz"
    index = filled()
    index.save(path)
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        emb = data["embeddings"]
    meta["format_version"] = 99
    np.savez(path, embeddings=emb, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(IndexUnusable, match="format version 99"):
        FaceIndex.load(path, FP)


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04 not really a zip"])
def test_corrupt_or_missing_index_is_refused(tmp_path, content):
    with pytest.raises(IndexUnusable, match="no face index"):
        FaceIndex.load(tmp_path / "absent.npz", FP)
    path = tmp_path / "index.npz"
    path.write_bytes(content)
    with pytest.raises(IndexUnusable, match="unreadable"):
        FaceIndex.load(path, FP)


def test_removed_student_leaves_no_template_bytes(tmp_path):
    path = tmp_path / "index.npz"
    index = filled()
    gone = index.embeddings[[t.student_id == "s1" for t in index.templates]].copy()
    index.save(path)
    assert gone[0].tobytes() in path.read_bytes()  # uncompressed: the check below can see bytes

    assert index.remove_student("s1") == 2
    index.save(path)
    raw = path.read_bytes()
    for row in gone:
        assert row.tobytes() not in raw
        assert row[:4].tobytes() not in raw  # not even a fragment of the vector
    back = FaceIndex.load(path, FP)
    assert "s1" not in back.student_ids() and all(t.student_id != "s1" for t in back.templates)
    assert all(c.student_id != "s1" for cands in back.search(gone) for c in cands)


def test_encrypted_index_round_trip_and_tamper_refusal(tmp_path):
    from optout_guard.index import new_key

    key = base64.b64decode(new_key())
    path = tmp_path / "index.npz"
    index = filled()
    index.save(path, key)
    raw = path.read_bytes()
    assert raw.startswith(b"OPTOUT-GUARD-INDEX-AESGCM-1") and index.embeddings[0].tobytes() not in raw
    back = FaceIndex.load(path, FP, key)
    np.testing.assert_array_equal(back.embeddings, index.embeddings)

    with pytest.raises(IndexUnusable, match="is encrypted"):
        FaceIndex.load(path, FP)  # no key
    with pytest.raises(IndexUnusable, match="tampered with, or the key is wrong"):
        FaceIndex.load(path, FP, bytes(32))  # wrong key
    flipped = bytearray(raw)
    flipped[len(flipped) // 2] ^= 0x01  # one bit changed anywhere
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexUnusable, match="tampered with"):
        FaceIndex.load(path, FP, key)
    filled().save(path)  # a plain index swapped in where an encrypted one belongs
    with pytest.raises(IndexUnusable, match="not encrypted although a key is configured"):
        FaceIndex.load(path, FP, key)


def test_key_from_file_never_beside_the_index_and_cli_workflow(tmp_path, samples):
    import shutil

    from typer.testing import CliRunner

    from optout_guard.cli import app
    from optout_guard.config import load_settings
    from optout_guard.errors import ConfigError
    from optout_guard.index import index_key

    runner = CliRunner()
    keys = tmp_path / "keys"
    keys.mkdir()
    assert runner.invoke(app, ["key", "new", str(keys / "index.key")]).exit_code == 0
    assert stat.S_IMODE((keys / "index.key").stat().st_mode) == 0o600
    assert runner.invoke(app, ["key", "new", str(keys / "index.key")]).exit_code == 2  # never overwritten
    ws = tmp_path / "ws"
    (ws / "enrollments" / "S1").mkdir(parents=True)
    shutil.copy(samples["grace_hopper"], ws / "enrollments" / "S1" / "a.jpg")
    (ws / "config.toml").write_text(f'index_key_file = "{keys / "index.key"}"\n')
    assert runner.invoke(app, ["--workspace", str(ws), "enroll"]).exit_code == 0
    settings = load_settings(ws, environ={})
    assert settings.index_file.read_bytes().startswith(b"OPTOUT-GUARD-INDEX-AESGCM-1")
    checked = runner.invoke(app, ["--workspace", str(ws), "check", str(samples["grace_hopper"])])
    assert checked.exit_code == 1, checked.output  # the encrypted index is used transparently

    (ws / ".optout-guard" / "stray.key").write_text((keys / "index.key").read_text())
    (ws / "config.toml").write_text('index_key_file = ".optout-guard/stray.key"\n')
    with pytest.raises(ConfigError, match="must not be kept beside the index"):
        index_key(load_settings(ws, environ={}))
