"""Enrollment's rules on fake models (issue 29 §3: enrollment takes the same ``FaceModels`` bundle as
a check): which face of a reference photo is the student, the size rule, the real quality gate
between aligner and encoder, and an incremental re-run — in milliseconds, with faces and
embeddings the test chooses. ``test_enroll.py`` keeps the same rules on real photos."""

from __future__ import annotations

import dataclasses

import numpy as np

from fakes import face, fake_models, photo, unit
from optout_guard.config import load_settings
from optout_guard.enroll import enroll_folder, reference_embedding
from optout_guard.index import FaceIndex
from optout_guard.types import Box

RNG = np.random.default_rng(29)


def test_the_portrait_is_the_larger_centred_face_and_two_alike_are_refused(tmp_path):
    settings = load_settings(tmp_path, environ={})
    detector, encoder, bundle = fake_models()
    portrait = photo(tmp_path / "portrait.jpg", (10, 20, 30))  # 800×400
    centred = dataclasses.replace(face(320.0), box=Box(320.0, 120.0, 160.0, 160.0))  # its middle is the photo's
    behind = face(20.0, width=90.0)  # ~0.56 of the portrait's width
    detector.place(portrait, behind, centred)
    encoder.vectors[320.0] = unit(RNG)[0]
    notes: list[str] = []
    vector = reference_embedding(portrait, settings, bundle, notes)
    assert isinstance(vector, np.ndarray) and np.allclose(vector, encoder.vectors[320.0], atol=1e-6)
    assert notes == ["the centred portrait face was used; 1 smaller face(s) in the photo left aside"]

    twins = photo(tmp_path / "twins.jpg", (30, 20, 10))
    detector.place(twins, face(100.0, width=150.0), face(500.0, width=140.0))
    refused = reference_embedding(twins, settings, bundle)
    assert isinstance(refused, str) and refused.startswith("2 faces found and none is clearly the portrait")

    nobody = photo(tmp_path / "nobody.jpg", (1, 1, 1))
    assert reference_embedding(nobody, settings, bundle) == "no face found"


def test_a_reference_face_needs_twice_the_size_a_check_needs(tmp_path):
    settings = load_settings(tmp_path, environ={})  # min_face_px 40: a reference needs 80 px
    detector, encoder, bundle = fake_models()
    small = photo(tmp_path / "small.jpg", (5, 5, 5))
    detector.place(small, face(300.0, width=70.0))
    encoder.vectors[300.0] = unit(RNG)[0]
    assert reference_embedding(small, settings, bundle) == "face too small for a reference (70 px wide; at least 80 px needed)"


def test_the_products_quality_gate_runs_between_the_fake_aligner_and_encoder(tmp_path):
    """The gate is the product's own code, not the fakes': a face turned on its side is never
    embedded, and a chip under the sharpness floor is refused with the gate's own words."""
    settings = load_settings(tmp_path, environ={})
    detector, encoder, bundle = fake_models()
    turned = photo(tmp_path / "turned.jpg", (7, 7, 7))
    detector.place(turned, dataclasses.replace(face(300.0, width=150.0), upright=False, box=Box(300.0, 40.0, 150.0, 150.0)))
    encoder.vectors[300.0] = unit(RNG)[0]
    settings = dataclasses.replace(settings, judge_turned_faces=False)
    assert "turned on its side" in str(reference_embedding(turned, settings, bundle))

    sharp = photo(tmp_path / "sharp.jpg", (8, 8, 8))
    detector.place(sharp, face(310.0, width=150.0))
    encoder.vectors[310.0] = unit(RNG)[0]
    strict = dataclasses.replace(settings, min_sharpness=1e9)  # no chip is that sharp
    assert str(reference_embedding(sharp, strict, bundle)).startswith("face too blurred to check (sharpness")
    assert isinstance(reference_embedding(sharp, settings, bundle), np.ndarray)


def test_a_rerun_embeds_only_new_and_changed_photos(tmp_path):
    settings = load_settings(tmp_path, environ={})
    detector, encoder, bundle = fake_models()
    root = tmp_path / "enrollments"
    a = photo(root / "s1" / "a.jpg", (1, 2, 3))
    b = photo(root / "s2" / "b.jpg", (4, 5, 6))
    for path, x in ((a, 300.0), (b, 301.0)):
        detector.place(path, face(x, width=150.0))
        encoder.vectors[x] = unit(RNG)[0]
    index = FaceIndex("fake-model")
    first = enroll_folder(root, index, settings, bundle)
    assert len(first.added) == 2 and detector.calls == 2

    again = enroll_folder(root, index, settings, bundle)
    assert (again.added, again.unchanged, again.removed) == ([], 2, []) and detector.calls == 2  # nothing decoded

    c = photo(root / "s1" / "c.jpg", (7, 8, 9))
    detector.place(c, face(302.0, width=150.0))
    encoder.vectors[302.0] = unit(RNG)[0]
    b.unlink()
    third = enroll_folder(root, index, settings, bundle)
    assert third.added == [("s1", str(c.resolve()))] and third.removed == [("s2", str(b.resolve()))]
    assert third.not_protected == ["s2"] and detector.calls == 3
