"""The district's cohort (docs/accuracy.md "Look-alikes, scopes and the cohort"): hub penalties and thresholds
per reference count from children who did not opt out — numbers kept, faces never."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import LFW
from optout_guard.cli import app
from optout_guard.cohort import CohortCalibration, calibrate_cohort, group_of, hub_penalties, own_floors
from optout_guard.config import Settings
from optout_guard.enroll import reference_embedding
from optout_guard.index import FaceIndex, Template
from optout_guard.matching import decide_faces
from optout_guard.types import Box, Decision, Face

SETTINGS = Settings()


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128))
    return v / np.linalg.norm(v, axis=1, keepdims=True) * 0.6


def calibrate(gallery, owners, counts, cohort, share=0.10, **kw):
    return calibrate_cohort(
        gallery, owners, counts, cohort, block_bound=0.40, review_bound=0.50, review_share=share,
        digest="d", made_at="2026-11-29T00:00:00Z", source="test", **kw,
    )  # fmt: skip


def test_hub_penalty_pushes_crowded_students_away_and_nobody_closer():
    # Column 0 is close to many cohort faces (a hub), column 2 far from all.
    d = np.array([[0.30, 0.50, 0.70], [0.31, 0.52, 0.72], [0.33, 0.49, 0.69], [0.35, 0.55, 0.71]])
    p = hub_penalties(d, k=2)
    assert p[0] > p[1] >= 0 and p[2] == 0
    assert np.all(p >= 0)


def test_thresholds_only_narrow_keep_a_band_and_hit_the_target_share():
    rng = np.random.default_rng(3)
    students = unit(rng, 40)
    # A crowded neighbourhood: cohort faces scattered near the students (distances ~0.3-0.6).
    cohort = np.repeat(students, 15, axis=0) + rng.normal(scale=0.045, size=(600, 128))
    gallery = np.vstack([students, students + rng.normal(scale=0.02, size=students.shape)])
    owners = [f"s{i:02d}" for i in range(40)] * 2
    counts = {f"s{i:02d}": 2 for i in range(40)}
    c = calibrate(gallery, owners, counts, cohort)
    assert c.held_share > 0.10  # crowded: the cohort acts
    block, review = c.thresholds["2"]
    assert block <= 0.40 and review <= 0.50 and review - block >= 0.03 - 1e-9
    assert any(v > 0 for v in c.penalties.values())
    # Not crowded (the same students, a cohort far away): nothing changes.
    far = calibrate(gallery, owners, counts, unit(rng, 200) * 1.5)
    assert far.thresholds == {"2": (0.40, 0.50)} and not any(far.penalties.values())


def test_candidates_carry_penalty_and_per_count_thresholds():
    rng = np.random.default_rng(5)
    a, b = unit(rng, 1)[0], unit(rng, 1)[0]
    index = FaceIndex("test")
    index.add(Template("one", "a1.jpg", "a1", ""), a)
    index.add(Template("two", "b1.jpg", "b1", ""), b)
    index.add(Template("two", "b2.jpg", "b2", ""), b)
    index.cohort = CohortCalibration(50, "d", "", "test", 0.1, 0.2, {"one": 0.05}, {"1": (0.35, 0.45), "2": (0.30, 0.40)})
    one = index.search(a[None, :] + 0.001, settings=SETTINGS)[0][0]
    assert one.student_id == "one" and one.penalty == pytest.approx(0.05) and one.limits.source == "cohort, 1 reference photo"
    two = index.search(b[None, :], settings=SETTINGS)[0][0]
    assert two.limits.source == "cohort, 2 reference photos" and (two.limits.block, two.limits.review) == (0.30, 0.40)
    # A face at raw distance 0.33 from "two": within the settings' block (0.40), not the cohort's (0.30).
    face = Face(Box(0, 0, 100, 100), 0.9, np.zeros((5, 2), np.float32))
    assert decide_faces([face], [(type(two)("two", 0.33, 0.0, two.limits),)], SETTINGS.thresholds)[0].decision is Decision.REVIEW
    off = index.search(b[None, :], settings=Settings(cohort=False))[0][0]
    assert off.limits is None and off.penalty == 0.0  # cohort = false: the settings judge
    assert group_of(5) == "3+" and group_of(1) == "1"


def test_cohort_numbers_are_saved_stamped_and_removed_with_the_student(tmp_path):
    index = FaceIndex("test")
    rng = np.random.default_rng(1)
    index.add(Template("one", "a.jpg", "a", ""), unit(rng, 1)[0])
    before = index.gallery_fingerprint()
    index.cohort = CohortCalibration(50, "digest1", "2026-09-01", "picture day", 0.1, 0.3, {"one": 0.04}, {"1": (0.4, 0.5)})
    assert index.gallery_fingerprint() != before  # decisions made with other numbers are stale
    index.save(tmp_path / "index.npz")
    back = FaceIndex.load(tmp_path / "index.npz", "test")
    assert back.cohort == index.cohort
    back.remove_student("one")
    assert "one" not in back.cohort.penalties


def _id_delivery(root: Path, photos: dict[str, Path]) -> Path:
    root.mkdir(parents=True)
    for sid, src in photos.items():
        shutil.copy(src, root / f"{sid}.jpg")
    return root


def _embedding(photo: Path, face_models):
    return reference_embedding(photo, Settings(), face_models)


def _cohort_people(face_models, count: int, skip: set[str]) -> list[Path]:
    """One usable photo each of ``count`` (at most 100) LFW people, spread over the alphabet; the
    same walk for every count, so that a smaller cohort's embeddings are already computed."""
    names = sorted(p.name for p in LFW.iterdir() if p.is_dir() and p.name not in skip)
    found = []
    for name in names[:: max(1, len(names) // 200)]:
        photo = LFW / name / f"{name}_0001.jpg"
        if photo.is_file() and not isinstance(_embedding(photo, face_models), str):
            found.append(photo)
        if len(found) == count:
            break
    assert len(found) == count
    return found


@pytest.mark.data
def test_sync_uses_the_cohort_in_memory_only_and_judges_by_reference_count(tmp_path, data_dir, memo_models):
    face_models = memo_models  # the real models; the cohort photos are embedded once per process
    people = {"colin": "Colin_Powell", "hugo": "Hugo_Chavez", "tony": "Tony_Blair", "gw": "George_W_Bush"}
    both = _cohort_people(face_models, 100, set(people.values()))
    cohort, cohort_b = both[:50], both[50:]
    ws = tmp_path / "ws"
    ws.mkdir()
    # A small gallery is not crowded at the 10% default: ask for 1% so that the cohort acts.
    (ws / "config.toml").write_text("cohort_review_share = 0.01\n")
    (tmp_path / "list.txt").write_text("\n".join(people) + "\n")
    others = {f"C{i:03d}": p for i, p in enumerate(cohort)}
    last_year = _id_delivery(tmp_path / "PD2025", {sid: LFW / n / f"{n}_0002.jpg" for sid, n in people.items()} | others)
    this_year = _id_delivery(
        tmp_path / "PD2026",
        {sid: LFW / n / f"{n}_0003.jpg" for sid, n in people.items()} | {f"D{i:03d}": p for i, p in enumerate(cohort_b)},
    )
    run = CliRunner().invoke
    first = run(app, ["--workspace", str(ws), "sync", str(tmp_path / "list.txt"), "--format", "ids", "--photos", str(last_year),
                      "--picture-day", "2025-09-12", "--json"], catch_exceptions=False)  # fmt: skip
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["cohort"]["calibrated"] and doc["cohort"]["faces_used"] >= 40 and doc["cohort_photos"] == 50
    second = run(app, ["--workspace", str(ws), "sync", str(tmp_path / "list.txt"), "--format", "ids", "--photos", str(this_year),
                       "--picture-day", "2026-09-15"], catch_exceptions=False)  # fmt: skip
    assert second.exit_code == 0, second.output
    index = FaceIndex.load(ws / ".optout-guard" / "index.npz", index_fingerprint())
    assert index.cohort is not None and index.cohort.faces >= 40 and index.cohort.source.startswith("picture day 2026-09-15")
    assert {index.references(s) for s in people} == {2} and set(index.cohort.thresholds) == {"2"}
    assert any(v > 0 for v in index.cohort.penalties.values())
    # A student with 2 references is judged with the 2-reference thresholds, and the JSON says so.
    result = run(app, ["--workspace", str(ws), "check", "--json", str(LFW / "Colin_Powell" / "Colin_Powell_0004.jpg")])
    face = json.loads(result.stdout)["photos"][0]["faces"][0]
    assert face["student_id"] == "colin" and face["thresholds"]["source"] == "cohort, 2 reference photos"
    # Nothing of the cohort was written: no photo copied, no embedding or name in any file.
    assert sorted(p.name for p in (ws / "enrollments").iterdir()) == sorted(people)
    vectors = [_embedding(p, face_models) for p in both]  # what the sync computed (the same models and photos)
    needles = [np.asarray(v, np.float32).tobytes()[:16] for v in vectors if not isinstance(v, str)]
    needles += [np.asarray(v, np.float64).tobytes()[:16] for v in vectors if not isinstance(v, str)]
    for path in (p for p in ws.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(n in data for n in needles), f"a cohort embedding is in {path}"
        assert b"C007" not in data and b"C049.jpg" not in data, f"a cohort photo is named in {path}"
    # Another cohort (last year's children) gives other numbers (penalties are stamped with the
    # cohort that made them).
    other = _id_delivery(tmp_path / "other", {f"D{i:03d}": p for i, p in enumerate(cohort)})
    again = run(app, ["--workspace", str(ws), "enroll", "--cohort", str(other), "--json"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    changed = FaceIndex.load(ws / ".optout-guard" / "index.npz", index_fingerprint()).cohort
    assert changed is not None and changed.digest != index.cohort.digest and changed.penalties != index.cohort.penalties


def index_fingerprint() -> str:
    from optout_guard.models import embedding_fingerprint

    return embedding_fingerprint()


def test_faces_that_may_be_the_students_themselves_set_no_threshold():
    """Issue 26: a cohort face within the block distance of a student may be that student under
    another id: it must not narrow anybody's review (narrowing review turns reviews into allows)."""
    rng = np.random.default_rng(3)
    students = rng.normal(size=(6, 128))
    students *= 0.6 / np.linalg.norm(students, axis=1, keepdims=True)
    gallery, owners, counts = students, [f"s{i}" for i in range(6)], {f"s{i}": 1 for i in range(6)}
    cohort = np.repeat(students, 60, axis=0) + rng.normal(scale=0.05, size=(360, 128))  # 0.4-0.8 away: a crowd
    clean = calibrate(gallery, owners, counts, cohort)
    poisoned_faces = students[:3] + rng.normal(scale=0.01, size=(3, 128))  # the students' own photos
    poisoned = calibrate(gallery, owners, counts, np.vstack([cohort, poisoned_faces]))
    assert poisoned.dropped >= 3 and clean.dropped <= poisoned.dropped - 3
    assert poisoned.thresholds["1"][1] >= clean.thresholds["1"][1] - 1e-3  # review not narrowed by them


def test_review_never_narrows_below_what_a_students_own_photos_need():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(4, 128))
    base *= 0.6 / np.linalg.norm(base, axis=1, keepdims=True)
    # Student "far" has two reference photos 0.46 apart; the others one each.
    step = rng.normal(size=128)
    step *= 0.46 / np.linalg.norm(step)
    gallery = np.vstack([base[0], base[0] + step, base[1:]])
    owners = ["far", "far", "b", "c", "d"]
    counts = {"far": 2, "b": 1, "c": 1, "d": 1}
    floors = own_floors(gallery, owners, review_bound=0.50)
    assert set(floors) == {"far"} and floors["far"] == pytest.approx(0.46, abs=0.005)
    # A crowd narrowed the 2-photo group's review to 0.40: far's own photos need 0.46, far keeps 0.46.
    c = CohortCalibration(400, "d", "", "test", 0.1, 0.3, {}, {"1": (0.35, 0.42), "2": (0.33, 0.40)}, floors)
    limits = c.limits(2, "far")
    assert limits is not None and limits.review == pytest.approx(0.46, abs=0.005) and limits.block == 0.33
    assert c.limits(1, "b").review == 0.42
    assert CohortCalibration.from_json(c.as_json()).floors == c.floors
    # And calibrating from a cohort records the floors.
    cohort = np.repeat(gallery, 80, axis=0) + rng.normal(scale=0.045, size=(400, 128))
    assert calibrate(gallery, owners, counts, cohort).floors == floors
    assert "own photos" in limits.source


@pytest.mark.data
def test_a_cohort_with_enrolled_students_photos_is_refused(tmp_path, data_dir, memo_models):
    """`enroll --cohort DIR` with photos of enrolled students among the "children not on the list":
    refused whole, thresholds unchanged, and the output says what to check."""
    face_models = memo_models  # the real models; the cohort photos are embedded once per process
    people = {"colin": "Colin_Powell", "gw": "George_W_Bush"}
    ws = tmp_path / "ws"
    for sid, name in people.items():
        (ws / "enrollments" / sid).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(LFW / name / f"{name}_{i:04d}.jpg", ws / "enrollments" / sid / f"{i}.jpg")
    run = CliRunner().invoke
    assert run(app, ["--workspace", str(ws), "enroll"]).exit_code == 0
    strangers = {f"D{i:03d}": p for i, p in enumerate(_cohort_people(face_models, 45, set(people.values())))}
    own = {f"X{i:03d}": LFW / name / f"{name}_{n:04d}.jpg" for i, (name, n) in
           enumerate((name, n) for name in people.values() for n in range(3, 9))}  # fmt: skip
    cohort = _id_delivery(tmp_path / "cohort", strangers | own)
    result = run(app, ["--workspace", str(ws), "enroll", "--cohort", str(cohort), "--json"], catch_exceptions=False)
    doc = json.loads(result.stdout)
    assert doc["cohort"]["calibrated"] is False and doc["cohort"]["refused_for_faces_like_students"] > 3, doc["cohort"]
    assert "leading zeros" in doc["cohort"]["skipped_because"]
    assert FaceIndex.load(ws / ".optout-guard" / "index.npz", index_fingerprint()).cohort is None
    table = run(app, ["--workspace", str(ws), "enroll", "--cohort", str(cohort)], catch_exceptions=False)
    assert "Cohort not used" in table.stdout and "thresholds unchanged" in table.stdout


@pytest.mark.data
def test_a_delivery_whose_ids_lost_their_leading_zeros_loosens_nothing(tmp_path, data_dir, memo_models):
    """The list says 0101; the photographer's spreadsheet (Excel) says 101. Those photos are the
    opted-out students' own, never "children not on the list"."""
    face_models = memo_models  # the real models; the cohort photos are embedded once per process
    people = {"0101": "Colin_Powell", "0102": "Hugo_Chavez", "0103": "Tony_Blair", "0104": "George_W_Bush"}
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "list.txt").write_text("\n".join(people) + "\n")
    cohort = _cohort_people(face_models, 50, set(people.values()))
    delivery = _id_delivery(
        tmp_path / "PD", {sid.lstrip("0"): LFW / n / f"{n}_0002.jpg" for sid, n in people.items()}
        | {f"C{i:03d}": p for i, p in enumerate(cohort)},
    )
    result = CliRunner().invoke(app, ["--workspace", str(ws), "sync", str(tmp_path / "list.txt"), "--format", "ids",
                                      "--photos", str(delivery), "--picture-day", "2026-09-12", "--json"],
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cohort_photos"] == 50  # the four opted-out students' photos are not in the cohort …
    index = FaceIndex.load(ws / ".optout-guard" / "index.npz", index_fingerprint())
    assert {index.references(s) for s in people} == {1}  # … they protect them
    # What the thresholds in use catch and hold, said by calibrate too (issue 26 §2), as by people and sync.
    said = CliRunner().invoke(app, ["--workspace", str(ws), "calibrate"], catch_exceptions=False)
    assert "would be caught" in " ".join(said.stdout.split()), said.stdout


def test_the_catch_floor_holds_on_a_synthetic_set_and_penalties_respect_it():
    """Issue 26 §2: a crowded cohort would narrow review to its target share; with pairs of the same
    children a year apart (>= 100), review never narrows below the distance that keeps all but
    max_catch_loss of the catch the settings' review gives, nor does review minus a hub penalty."""
    from optout_guard.cohort import MIN_PAIRS, CatchCurve

    rng = np.random.default_rng(3)
    students = unit(rng, 40)
    cohort = np.repeat(students, 15, axis=0) + rng.normal(scale=0.045, size=(600, 128))  # crowded
    owners = [f"s{i:02d}" for i in range(40)]
    counts = dict.fromkeys(owners, 1)
    pairs = np.linspace(0.20, 0.60, 200)  # catch at 0.50: 75%; at most 2 points lost: review >= ~0.492
    free = calibrate(students, owners, counts, cohort, max_catch_loss=1.0, pairs=pairs)
    held = calibrate(students, owners, counts, cohort, max_catch_loss=0.02, pairs=pairs)
    curve = CatchCurve.from_pairs(pairs)
    assert free.thresholds["1"][1] < 0.48  # the cohort alone narrows a lot …
    floor = held.review_floor
    assert curve.catch(0.50) - curve.catch(floor) <= 0.02 + 1e-9 and floor < 0.50
    assert held.thresholds["1"][1] >= floor - 1e-9  # … the floor stops it
    assert all(held.thresholds["1"][1] - p >= floor - 1e-4 for p in held.penalties.values())
    assert held.catch >= curve.catch(0.50) - 0.02 - 1e-9
    assert held.catch_source == f"{len(pairs)} of your own children a year apart"
    assert "would be caught" in held.in_plain_words()
    # Fewer pairs than a quantile needs: children_dev's measured curve, and the summary says so.
    few = calibrate(students, owners, counts, cohort, pairs=pairs[: MIN_PAIRS - 1])
    assert "children_dev" in few.catch_source and f"only {MIN_PAIRS - 1} pairs" in few.catch_source
    assert few.review_floor == pytest.approx(CatchCurve.from_pairs(None).floor(0.50, 0.02))
