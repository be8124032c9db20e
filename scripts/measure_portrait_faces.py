"""When is one face clearly *the* portrait in a reference photo with other faces in it?

Picture-day photos sometimes catch a second child in the background. A reference photo is used
only when there is no doubt whose face it is: this measures, on real portraits where the subject is
known to be the centred face (LFW, deep-funnelled: the named person is centred), how often the
rule "the largest face is near the centre and every other face is at most R of its width" picks
the subject, and how many multi-face portraits it accepts, for several R. A wrong pick is a
reference photo of the wrong child: the rule must make none.

    .venv/bin/python scripts/measure_portrait_faces.py [--people 1500] [--out bench-out/portrait_faces.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw_deepfunneled_color250" / "lfw"


def off_centre(box, size: tuple[int, int]) -> float:
    """How far a box's centre is from the photo's, as a share of the photo's side (0 = centred)."""
    w, h = size
    return max(abs(box.x + box.w / 2 - w / 2) / w, abs(box.y + box.h / 2 - h / 2) / h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "portrait_faces.json")
    args = parser.parse_args()
    from optout_guard.config import Settings
    from optout_guard.detection import detect_faces
    from optout_guard.media.photos import load_image
    from optout_guard.models import get_models

    settings, models = Settings(), get_models()
    people = sorted(p for p in LFW.iterdir() if p.is_dir())[: args.people]
    multi = []
    for n, person in enumerate(people):
        photo = sorted(person.glob("*.jpg"))[0]
        image = load_image(photo, settings)
        faces = sorted(detect_faces(image, settings, models), key=lambda f: f.box.w, reverse=True)
        if len(faces) < 2:
            continue
        first = faces[0].box
        # LFW: the named person is the centred face.
        subject = min(range(len(faces)), key=lambda i: off_centre(faces[i].box, image.size))
        multi.append({"ratio": faces[1].box.w / first.w, "largest_is_subject": subject == 0,
                      "largest_off_centre": off_centre(first, image.size)})  # fmt: skip
        if n % 200 == 0:
            print(f"  {n}/{len(people)} photos, {len(multi)} with 2+ faces", file=sys.stderr, flush=True)
    rules = {}
    for ratio in (0.5, 0.6, 0.67, 0.75, 0.8, 0.9):
        for centre in (0.15, 0.25):
            accepted = [m for m in multi if m["ratio"] < ratio and m["largest_off_centre"] <= centre]
            wrong = sum(not m["largest_is_subject"] for m in accepted)
            rules[f"ratio<{ratio}, centre<={centre}"] = {"accepted": len(accepted), "wrong_pick": wrong}
    today = [m for m in multi if m["ratio"] < 0.5]
    figures = {"photos": len(people), "with_2_or_more_faces": len(multi),
               "rule_before (ratio<0.5, anywhere)": {"accepted": len(today), "wrong_pick": sum(not m["largest_is_subject"] for m in today)},
               "rules": rules}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
