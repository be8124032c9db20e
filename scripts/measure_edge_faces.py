#!/usr/bin/env python3
"""What the "cut by the edge" rule (embedding.partly_visible) costs: faces and photos it sends to
review that were judged before, on real photos from ../shared/data. The rule never clears a face; it
only stops half a face from being cleared, so its cost is extra reviews, measured here.

    .venv/bin/python scripts/measure_edge_faces.py [--lfw 2000] [--people 60]

Part 1 (benefit): 60 LFW people enrolled from 2 photos each; a third photo of each is cut by the
edge (20/35/50% of the face width, from each side) and checked with the rule off: how often the
enrolled person's cut face is *cleared*, and how many of those the rule sends to review instead.
Part 2 (cost): faces judged before that the rule now holds, on real group photos and portraits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optout_guard.config import load_settings
from optout_guard.detection import detect_faces
from optout_guard.embedding import is_upright, partly_visible
from optout_guard.errors import ImageRejected
from optout_guard.face_models import model_bundle
from optout_guard.media.photos import load_image
from optout_guard.models import get_models

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def cut_series(people_count: int, settings, models) -> None:
    import random
    import tempfile

    from PIL import Image

    from optout_guard import embedding
    from optout_guard.enroll import reference_embedding
    from optout_guard.index import FaceIndex, Template
    from optout_guard.models import embedding_fingerprint

    lfw = DATA / "lfw_deepfunneled_color250" / "lfw"
    people = [p for p in sorted(lfw.iterdir()) if len(list(p.glob("*.jpg"))) >= 4]
    random.seed(3)
    people = random.sample(people, people_count)
    index = FaceIndex(embedding_fingerprint())
    probes = []
    for person in people:
        photos = sorted(person.glob("*.jpg"))
        for photo in photos[:2]:
            vector = reference_embedding(photo, settings, model_bundle(models))
            if not isinstance(vector, str):
                index.add(Template(person.name, str(photo), str(photo), "", ""), vector)
        probes.append((person.name, photos[2]))
    tmp = Path(tempfile.mkdtemp()) / "cut.jpg"
    rows: dict[float, dict[str, int]] = {}
    for _student, photo in probes:
        whole = Image.open(photo)
        centred = [f for f in detect_faces(load_image(photo, settings), settings, models) if abs(f.box.x + f.box.w / 2 - 125) < 40]
        if not centred:
            continue
        f0 = centred[0]
        for frac in (0.0, 0.2, 0.35, 0.5):
            for side in ("left", "right", "top", "bottom") if frac else ("none",):
                cut = int(f0.box.w * frac)
                box = {"left": (int(f0.box.x) + cut, 0, 250, 250), "right": (0, 0, int(f0.box.right) - cut, 250),
                       "top": (0, int(f0.box.y) + cut, 250, 250), "bottom": (0, 0, 250, int(f0.box.bottom) - cut),
                       "none": (0, 0, 250, 250)}[side]  # fmt: skip
                whole.crop(box).save(tmp)
                image = load_image(tmp, settings)
                faces = detect_faces(image, settings, models)
                row = rows.setdefault(frac, {"faces": 0, "cleared": 0, "cleared, now held": 0})
                if not faces:
                    continue
                face = max(faces, key=lambda f: f.box.w * f.box.h)
                if not is_upright(face):
                    row["faces"] += 1  # held as "turned" either way
                    continue
                rule, embedding.partly_visible = embedding.partly_visible, lambda *_a: False
                try:
                    embedded = embedding.embed_faces(image, [face], settings, model_bundle(models))
                finally:
                    embedding.partly_visible = rule
                row["faces"] += 1
                if embedded.unjudged:
                    continue
                nearest = index.search(embedded.vectors, k=1)[0][0]
                if nearest.distance > settings.review_distance:
                    row["cleared"] += 1
                    row["cleared, now held"] += partly_visible(face, *image.size)
    print("Enrolled person's face cut by the edge (rule off → rule on):")
    print(f"{'cut':>6} {'faces':>6} {'cleared without the rule':>25} {'of those held by the rule':>26}")
    for frac, row in sorted(rows.items()):
        share = f"{row['cleared']} ({100 * row['cleared'] / max(row['faces'], 1):.0f}%)"
        print(f"{frac:>5.0%} {row['faces']:>6} {share:>25} {row['cleared, now held']:>26}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lfw", type=int, default=2000, help="LFW photos to include (every n-th of the set)")
    parser.add_argument("--people", type=int, default=60, help="LFW people enrolled for the cut series")
    args = parser.parse_args()
    settings = load_settings(".", environ={})
    models = get_models()
    cut_series(args.people, settings, models)
    print()
    sets = {
        "ultralight crowd (24)": sorted((DATA / "ultralight_crowd_imgs" / "imgs").glob("*.jpg")),
        "dlib faces (group photos)": sorted((DATA / "dlib_examples" / "examples" / "faces").glob("*.jpg")),
        "group photos (bbt, got, deepface, multiface, t1)": [
            *sorted((DATA / "faceapijs_bbt").rglob("bbt*.jpg")), *sorted((DATA / "facerecognitionjs_bbt").rglob("got.jpg")),
            *sorted((DATA / "deepface_testset").rglob("*many*.jpg")), *sorted((DATA / "deepface_testset").rglob("couple.jpg")),
            *sorted((DATA / "facenet_pytorch_testimgs").rglob("multiface.jpg")), *sorted((DATA / "insightface_testimgs").rglob("t1.jpg")),
        ],
    }
    lfw = sorted((DATA / "lfw_deepfunneled_color250" / "lfw").rglob("*.jpg"))
    sets[f"LFW portraits ({args.lfw})"] = lfw[:: max(1, len(lfw) // args.lfw)][: args.lfw]
    print(f"{'set':52} {'photos':>6} {'judged faces':>12} {'now partly visible':>18} {'photos to review':>16}")
    for name, paths in sets.items():
        judged = cut = photos_cut = 0
        for path in paths:
            try:
                image = load_image(path, settings)
            except ImageRejected:
                continue
            any_cut = False
            for face in detect_faces(image, settings, models):
                if not is_upright(face) or face.box.w / image.scale < settings.min_face_px:
                    continue  # not judged before either
                judged += 1
                h, w = image.pages[face.page].shape[:2]
                if partly_visible(face, w * image.scale, h * image.scale):
                    cut += 1
                    any_cut = True
            photos_cut += any_cut
        share = f"{cut} ({100 * cut / max(judged, 1):.1f}%)"
        print(f"{name:52} {len(paths):>6} {judged:>12} {share:>18} {photos_cut:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
