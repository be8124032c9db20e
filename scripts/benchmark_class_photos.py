"""Synthetic class photos: what a district lives with — photos held, faces held per photo, enrolled blocked.

Each class photo is 20 real LFW faces (60-120 px wide, soft oval edges, 4 rows of 5 on a plain
backdrop, saved as a JPEG) of people who are never enrolled and not in the cohort; in half of the
photos one of them is replaced by a photo of an enrolled person that was not enrolled (a later
"school photo"). The gallery is --enrolled people with 2 reference photos each (from the embedding
cache of scripts/benchmark_accuracy.py); the cohort is 600 other never-enrolled people.

Every photo goes once through the product's whole pipeline (``Guard.check``: load, detect,
quality gates, embed), and the same faces are then decided under each configuration with
``Guard.decide`` — so the configurations differ only in the decision, never in detection.
Adults, not children: read the direction and relative size of each change.

    .venv/bin/python scripts/benchmark_class_photos.py [--photos 60] [--enrolled 300] [--out bench-out/class-photos]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_galleries import CACHE, SHIPPED, TODAY, Split, build_index, calibrate, load
from benchmark_groups import gt_box, hit, oval_mask
from optout_guard.models import get_models
from optout_guard.pipeline import Guard
from optout_guard.scope import Scope
from optout_guard.types import Box, Decision, ReasonCode, Unjudged, Verdict

CANVAS = (1500, 1000)


def compose(faces: list[tuple[str, str]], rng: random.Random, models) -> tuple[Image.Image, list[tuple[str, Box]]]:
    canvas = Image.new("RGB", CANVAS, (70, 90, 120))
    truth = []
    for slot, (person, path) in enumerate(faces):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        found = gt_box(models, pixels)
        if found is None:
            continue
        bx, by, bw, bh = found
        size = rng.randint(60, 120)
        scale = size / bw
        left, top = max(0, bx - bw * 0.5), max(0, by - bh * 0.7)
        right, bottom = min(250, bx + bw * 1.5), min(250, by + bh * 1.5)
        crop = Image.fromarray(pixels).crop((int(left), int(top), int(right), int(bottom)))
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.LANCZOS)
        col, row = slot % 5, slot // 5
        x0 = 40 + col * 290 + rng.randint(0, max(0, 250 - crop.width))
        y0 = 30 + row * 240 + rng.randint(0, max(0, 220 - crop.height))
        canvas.paste(crop, (x0, y0), oval_mask(crop.size))
        truth.append((person, Box(x0 + (bx - int(left)) * scale, y0 + (by - int(top)) * scale, bw * scale, bh * scale)))
    return canvas, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--enrolled", type=int, default=300)
    parser.add_argument("--scoped", type=int, default=25, help="students in a school's scope")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "bench-out" / "class-photos")
    args = parser.parse_args()
    started = time.perf_counter()
    data = load(args.seed)
    paths = [str(p) for p in np.load(CACHE, allow_pickle=False)["paths"]]
    rng = random.Random(args.seed)
    four = [p for p in data.names if len(data.person[p]) >= 4]
    enrolled = sorted(rng.sample(four, args.enrolled))
    others = [p for p in data.names if p not in set(enrolled)]
    rng.shuffle(others)
    cohort_people, strangers = others[:600], others[600:]
    split = Split(enrolled, [data.person[p][0] for p in cohort_people], [], [])
    index = build_index(data, split, 2)
    models = get_models()

    # The scoped gallery: the enrolled people who appear in photos come from the school's own 25.
    school = sorted(rng.sample(enrolled, args.scoped))
    configs = {
        "today (district-wide, 0.40/0.50, strict look-alike rule)": (TODAY, None, False),
        f"scoped to one school ({args.scoped} of {args.enrolled} enrolled)": (TODAY, frozenset(school), False),
        "hub penalty + cohort thresholds + relaxed look-alike rule": (SHIPPED, None, True),
        "all three + scope": (SHIPPED, frozenset(school), True),
    }
    embedded = []  # per photo: (faces, per-face embeddings, unjudged, truth, enrolled person or None)
    guard = Guard(TODAY, models=models, index=index)
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.photos):
            people = rng.sample(strangers, 20)
            faces = [(p, paths[data.person[p][0]]) for p in people]
            target = None
            if n % 2 == 1:
                target = rng.choice(school)
                faces[rng.randrange(20)] = (target, paths[data.person[target][3]])
            image, truth = compose(faces, rng, models)
            path = Path(tmp) / f"class{n:03d}.jpg"
            image.save(path, quality=92)
            result, vectors = guard.check_keeping_embeddings(path)
            assert vectors is not None
            unjudged = {
                i: Unjudged(m.code if m.code is not ReasonCode.CLEAR else ReasonCode.NOT_JUDGED, m.reason)
                for i, m in enumerate(result.faces)
                if vectors[i] is None
            }
            embedded.append(([m.face for m in result.faces], list(vectors), unjudged, truth, target))
            print(f"  photo {n + 1}/{args.photos}: {len(result.faces)} faces", end="\r", flush=True)
    print()

    results: dict = {"photos": args.photos, "enrolled": args.enrolled, "references": 2, "scope_size": args.scoped}
    for label, (settings, only, cohort) in configs.items():
        if cohort:
            calibrate(index, data, split)
        else:
            index.cohort = None
        g = Guard(settings, models=models, index=index)
        scope = Scope("school", only) if only is not None else Scope()
        held_photos = blocked_photos = held_faces = unjudged_faces = false_blocks = 0
        clean = with_target = target_blocked = target_caught = found_target = 0
        for faces, vectors, unjudged, truth, target in embedded:
            matches, verdict, _ = g.decide(faces, vectors, unjudged, scope=scope)
            if target is None:
                clean += 1
                held_photos += verdict is not Verdict.ALLOW
                blocked_photos += verdict is Verdict.BLOCK
                held_faces += sum(m.decision is Decision.REVIEW for m in matches)
                unjudged_faces += len(unjudged)
                false_blocks += sum(m.decision is Decision.BLOCK for m in matches)
            else:
                with_target += 1
                box = next(b for p, b in truth if p == target)
                mine = [m for m in matches if hit(m.face.box, box)]
                found_target += bool(mine)
                target_blocked += any(m.decision is Decision.BLOCK and m.student_id == target for m in mine)
                target_caught += any(m.decision is not Decision.CLEAR for m in mine)
        row = {
            "photos_without_enrolled": clean,
            "held_or_blocked_share": round(held_photos / clean, 4),
            "blocked_share": round(blocked_photos / clean, 4),
            "faces_held_per_photo": round(held_faces / clean, 2),
            "of_which_unjudged_per_photo": round(unjudged_faces / clean, 2),
            "false_blocks": false_blocks,
            "photos_with_enrolled": with_target,
            "enrolled_face_found": found_target,
            "enrolled_blocked": round(target_blocked / with_target, 4),
            "enrolled_caught": round(target_caught / with_target, 4),
        }
        results[label] = row
        print(
            f"{label:<60} clean photos held {row['held_or_blocked_share']:6.1%} ({row['faces_held_per_photo']:.2f} faces/photo, "
            f"{row['of_which_unjudged_per_photo']:.2f} unjudged), false blocks {false_blocks}  |  enrolled blocked "
            f"{row['enrolled_blocked']:6.1%}, caught {row['enrolled_caught']:6.1%} (face found in {found_target}/{with_target})"
        )
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "class_photos.json").write_text(json.dumps(results, indent=1))
    print(f"{results['seconds']:.0f} s; figures in {args.out / 'class_photos.json'}")


if __name__ == "__main__":
    main()
