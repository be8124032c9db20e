"""Group photos with exact ground truth: detection recall and verdicts by face size, per detector.

Synthetic groups: real LFW faces (known identity; known box = dlib HOG's box on the 250 px
original) pasted, with a soft oval edge, into real face-free scenes from ../shared/data at a
controlled face width (24 … 128 px), 3000×2000 px each. Some pasted people are enrolled (from two
*other* photos of them), the rest never are. For every size it counts
  (a) detection recall,
  (b) end to end: enrolled faces that give *block* (and *review*), with the shipped settings and
      with the size gate off (min_face_px = 8) to show where the embedding stops being reliable,
  (c) false blocks: non-enrolled faces decided *block*.
Then detection recall on the real annotated boxes of dlib's group photos
(examples/faces/{training,testing}.xml) and faces found on ultralight_crowd_imgs/imgs, per detector.

    .venv/bin/python scripts/benchmark_groups.py [--images-per-size 4] [--out bench-out/groups]
"""

from __future__ import annotations

import argparse
import json
import random
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from optout_guard.config import Settings
from optout_guard.detection import detect_faces
from optout_guard.embedding import embed_faces
from optout_guard.enroll import reference_embedding
from optout_guard.face_models import model_bundle
from optout_guard.index import FaceIndex, Template
from optout_guard.matching import decide_faces
from optout_guard.media.photos import load_image
from optout_guard.models import embedding_fingerprint, get_models
from optout_guard.types import Box, Decision, LoadedImage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw_deepfunneled_color250" / "lfw"
FACES = DATA / "dlib_examples" / "examples" / "faces"
SIZES = (24, 32, 40, 48, 64, 96, 128)
CANVAS = (3000, 2000)
DETECTORS = {
    "centerface (default)": {"detector": "centerface"},
    "centerface, min face 48": {"detector": "centerface", "detect_min_face_px": 48},
    "hog, native resolution": {"detector": "hog", "detect_min_face_px": 80},
    "hog, upsampled for 40 px": {"detector": "hog", "detect_min_face_px": 40},
}


def gt_box(models, pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """The face box in an LFW original: dlib HOG (upsample 1), the face nearest the centre."""
    rects = models.hog(pixels, 1)
    if not rects:
        return None
    r = min(rects, key=lambda r: abs(r.center().x - 125) + abs(r.center().y - 125))
    return r.left(), r.top(), r.width(), r.height()


def oval_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    w, h = size
    ImageDraw.Draw(mask).ellipse([w * 0.05, h * 0.02, w * 0.95, h * 0.98], fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(1, w // 20)))


def build_group(background: Image.Image, faces: list[tuple[str, np.ndarray, tuple]], size: int, rng: random.Random):
    """Paste faces at face width ``size``; returns the image and ground truth [(identity, Box)]."""
    canvas = background.copy()
    cell = int(size * 2.6)
    cols, rows = CANVAS[0] // cell, CANVAS[1] // cell
    slots = rng.sample([(c, r) for c in range(cols) for r in range(rows)], min(len(faces), cols * rows))
    truth = []
    for (identity, pixels, (bx, by, bw, bh)), (c, r) in zip(faces, slots, strict=False):
        scale = size / bw
        # Crop around the face with context (hair, chin), scale so the face box is `size` wide.
        left, top = max(0, bx - bw * 0.6), max(0, by - bh * 0.8)
        right, bottom = min(250, bx + bw * 1.6), min(250, by + bh * 1.6)
        crop = Image.fromarray(pixels).crop((int(left), int(top), int(right), int(bottom)))
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.LANCZOS)
        x0 = c * cell + rng.randint(0, max(0, cell - crop.width))
        y0 = r * cell + rng.randint(0, max(0, cell - crop.height))
        canvas.paste(crop, (x0, y0), oval_mask(crop.size))
        truth.append((identity, Box(x0 + (bx - int(left)) * scale, y0 + (by - int(top)) * scale, bw * scale, bh * scale)))
    return canvas, truth


def hit(face_box: Box, truth: Box) -> bool:
    cx, cy = face_box.x + face_box.w / 2, face_box.y + face_box.h / 2
    inside = truth.x <= cx <= truth.right and truth.y <= cy <= truth.bottom
    return inside and 0.5 <= face_box.w / truth.w <= 2.0


def loaded(image: Image.Image, name: str) -> LoadedImage:
    arr = np.asarray(image.convert("RGB"))
    return LoadedImage(name, "0" * 64, "PNG", (arr.shape[1], arr.shape[0]), (arr,), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-size", type=int, default=4)
    parser.add_argument("--enrolled", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "groups")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    models = get_models()
    base = Settings()

    # --- people: enrolled (2 reference photos + a third photo to place) and never enrolled --------
    people = {p.name: sorted(p.glob("*.jpg")) for p in sorted(LFW.iterdir()) if p.is_dir()}
    three = sorted(n for n, ph in people.items() if len(ph) >= 3)
    enrolled_names = rng.sample(three, args.enrolled)
    others = rng.sample(sorted(set(people) - set(enrolled_names)), 400)
    index = FaceIndex(embedding_fingerprint())
    for name in enrolled_names:
        for ref in people[name][:2]:
            vec = reference_embedding(ref, base, model_bundle(models))
            if not isinstance(vec, str):
                index.add(Template(name, str(ref), "0" * 64, "2026-01-01T00:00:00+00:00"), vec)
    enrolled_names = index.protected_students()

    def face_entry(name: str, path: Path):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        box = gt_box(models, pixels)
        return None if box is None else (name, pixels, box)

    mated = [e for e in (face_entry(n, people[n][2]) for n in enrolled_names) if e]
    nonmated = [e for e in (face_entry(n, people[n][0]) for n in others) if e]
    backgrounds = [
        Image.open(p).convert("RGB").resize(CANVAS, Image.Resampling.BICUBIC)
        for p in sorted((DATA / "nonface_negatives" / "skimage_data").iterdir())
        if p.suffix in (".png", ".jpg") and p.name not in ("text.png", "coins.png")
    ]
    print(
        f"gallery: {len(enrolled_names)} people, {len(index)} reference photos; faces to place: "
        f"{len(mated)} enrolled, {len(nonmated)} never enrolled; {len(backgrounds)} backgrounds"
    )

    # --- synthetic groups ---------------------------------------------------------------------
    groups = []
    for size in SIZES:
        per_image = min(24, (CANVAS[0] // int(size * 2.6)) * (CANVAS[1] // int(size * 2.6)))
        for k in range(args.images_per_size):
            n_mated = max(1, per_image // 3)
            chosen = rng.sample(mated, n_mated) + rng.sample(nonmated, per_image - n_mated)
            image, truth = build_group(backgrounds[(k + size) % len(backgrounds)], chosen, size, rng)
            if size == 48 and k == 0:
                image.save(args.out / "example_group_48px.jpg", quality=90)
            groups.append((size, image, truth))

    results: dict[str, dict] = {"sizes": list(SIZES), "detectors": {}}
    enrolled_set = set(enrolled_names)
    for label, overrides in DETECTORS.items():
        settings = replace(base, **overrides)
        per_size = {
            s: {
                "faces": 0,
                "found": 0,
                "mated": 0,
                "block": 0,
                "review": 0,
                "block_any_size": 0,
                "nonmated": 0,
                "false_block": 0,
                "false_block_any_size": 0,
            }
            for s in SIZES
        }
        seconds = 0.0
        for size, image, truth in groups:
            img = loaded(image, f"group{size}")
            started = time.perf_counter()
            faces = detect_faces(img, settings, models)
            seconds += time.perf_counter() - started
            row = per_size[size]
            if label != "centerface (default)":
                for _identity, box in truth:
                    row["faces"] += 1
                    row["found"] += any(hit(f.box, box) for f in faces)
                continue
            # End to end with the shipped settings, and with the size gate off.
            for gate_label, gate in (("", settings), ("_any_size", replace(settings, min_face_px=8, min_sharpness=0.0))):
                embedded = embed_faces(img, faces, gate, model_bundle(models))
                found = index.search(embedded.vectors)
                decisions = {i: (Decision.REVIEW, None) for i in embedded.unjudged}
                judged = decide_faces([faces[i] for i in embedded.judged], found, gate.thresholds)  # the product's rule, per photo
                for i, m in zip(embedded.judged, judged, strict=True):
                    decisions[i] = (m.decision, m.student_id)
                for identity, box in truth:
                    match = next((i for i, f in enumerate(faces) if hit(f.box, box)), None)
                    decision, student = decisions.get(match, (None, None)) if match is not None else (None, None)
                    if gate_label == "":
                        row["faces"] += 1
                        row["found"] += match is not None
                    if identity in enrolled_set:
                        if gate_label == "":
                            row["mated"] += 1
                            row["block"] += decision is Decision.BLOCK and student == identity
                            row["review"] += decision is Decision.REVIEW
                        else:
                            row["block_any_size"] += decision is Decision.BLOCK and student == identity
                    else:
                        if gate_label == "":
                            row["nonmated"] += 1
                            row["false_block"] += decision is Decision.BLOCK
                        else:
                            row["false_block_any_size"] += decision is Decision.BLOCK
        results["detectors"][label] = {"per_size": per_size, "detect_seconds_per_6mp_image": seconds / len(groups)}
        recall = " ".join(f"{s}px:{r['found'] / max(1, r['faces']):.0%}" for s, r in per_size.items())
        print(f"[{label}] recall by face width: {recall}  ({seconds / len(groups):.2f} s detection per 6 MP image)")
        if label == "centerface (default)":
            for s, r in per_size.items():
                print(
                    f"   {s:4d} px: enrolled {r['mated']:3d} -> block {r['block'] / max(1, r['mated']):6.1%}, "
                    f"review {r['review'] / max(1, r['mated']):6.1%} | size gate off: block "
                    f"{r['block_any_size'] / max(1, r['mated']):6.1%} | non-enrolled {r['nonmated']:3d}: false blocks "
                    f"{r['false_block']} (gate off: {r['false_block_any_size']})"
                )

    # --- real annotated group photos (dlib imglab boxes) ------------------------------------------
    xml_images = []
    for xml in ("training.xml", "testing.xml"):
        for image in ET.parse(FACES / xml).getroot().iter("image"):
            boxes = [
                Box(int(b.get("left")), int(b.get("top")), int(b.get("width")), int(b.get("height")))
                for b in image.iter("box")
                if b.get("ignore") != "1"
            ]
            xml_images.append((FACES / image.get("file"), boxes))
    results["dlib_xml"] = {}
    for label, overrides in {**DETECTORS, "dlib cnn (mmod)": {"detector": "cnn"}}.items():
        total = found = 0
        seconds = 0.0
        for path, boxes in xml_images:
            img = load_image(path, base)
            started = time.perf_counter()
            if overrides.get("detector") == "cnn":
                dets = cnn_detect(img.pages[0])
            else:
                dets = [f.box for f in detect_faces(img, replace(base, **overrides), models)]
            seconds += time.perf_counter() - started
            for box in boxes:
                total += 1
                found += any(hit(d, box) for d in dets)
        results["dlib_xml"][label] = {"faces": total, "found": found, "seconds_per_photo": seconds / len(xml_images)}
        print(
            f"dlib annotated photos [{label}]: {found}/{total} faces found (all are 37–109 px), "
            f"{seconds / len(xml_images):.2f} s per photo"
        )

    # --- crowd photos: faces found ---------------------------------------------------------------
    crowd = sorted((DATA / "ultralight_crowd_imgs" / "imgs").glob("*.jpg"))
    results["crowd"] = {}
    for label, overrides in DETECTORS.items():
        started = time.perf_counter()
        count = sum(len(detect_faces(load_image(p, base), replace(base, **overrides), models)) for p in crowd)
        seconds = (time.perf_counter() - started) / len(crowd)
        results["crowd"][label] = {"photos": len(crowd), "faces": count, "seconds_per_photo": seconds}
        print(f"ultralight crowd photos [{label}]: {count} faces in {len(crowd)} photos, {seconds:.2f} s per photo")

    (args.out / "groups.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "recall_vs_face_size.png")
    print(f"figures: {args.out / 'groups.json'}, plot: {args.out / 'recall_vs_face_size.png'}")


_cnn = None


def cnn_detect(pixels: np.ndarray) -> list[Box]:
    """dlib's CNN (MMOD) detector, upsample 0: for comparison only (too slow on CPU to ship)."""
    global _cnn
    import dlib

    from optout_guard.models import _package_dir

    if _cnn is None:
        _cnn = dlib.cnn_face_detection_model_v1(
            str(_package_dir("face_recognition_models") / "models" / "mmod_human_face_detector.dat")
        )
    return [Box(d.rect.left(), d.rect.top(), d.rect.width(), d.rect.height()) for d in _cnn(pixels, 0)]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    sizes = results["sizes"]
    for label, data in results["detectors"].items():
        rows = data["per_size"]
        ax.plot(
            sizes,
            [
                rows[str(s)]["found"] / max(1, rows[str(s)]["faces"])
                if str(s) in rows
                else rows[s]["found"] / max(1, rows[s]["faces"])
                for s in sizes
            ],
            marker="o",
            label=f"detected: {label}",
        )
    rows = results["detectors"]["centerface (default)"]["per_size"]
    get = lambda s, k: rows[s][k] if s in rows else rows[str(s)][k]  # noqa: E731
    ax.plot(
        sizes,
        [get(s, "block") / max(1, get(s, "mated")) for s in sizes],
        "k--",
        marker="s",
        label="enrolled face → block (shipped)",
    )
    ax.plot(
        sizes,
        [get(s, "block_any_size") / max(1, get(s, "mated")) for s in sizes],
        ":",
        color="grey",
        marker="s",
        label="enrolled face → block (size gate off)",
    )
    ax.set_xlabel("face width in the photo (px)")
    ax.set_ylabel("fraction of faces")
    ax.set_ylim(0, 1.02)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Synthetic groups of real LFW faces: detection and block rate by face size", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
