"""Consenting students (issue 31): what recognising consenting children clears, and what it costs.

On ../shared/data/children_dev with the product's embeddings (the cache of
scripts/benchmark_children.py: every photo through the product's loader, detector, quality gate and
embedder). For each of --splits random "schools":

- 12 FG-NET children are opted out, enrolled from one photo at age 5-12; their photos 1-3 years
  later are the appearances to catch (as in benchmark_children.py).
- Every other child consents with probability p (30 / 60 / 90%). A consenting FG-NET child gets a
  template from a photo at 5-12 and their photos 1-3 years later are their faces in event photos;
  a non-consenting FG-NET child's faces are all their photos at 5-14. A consenting UTKFace child
  (one photo each) has only a template (a look-alike for the opted-out children; never a test face);
  a non-consenting one is a face.
- Each face is decided as a one-face photo with the product's search and rules
  (`FaceIndex.search`, `matching.decide_faces`), then the product's consent rule
  (`FaceIndex.recognise`, `consent.clear_consenting`) at margins 0 / 0.03 / 0.06 / 0.09.

Figures: opted-out appearances caught / blocked and cleared by a look-alike consenting child; other
children's faces held per face (consenting and not, and mixed at the share p); class photos of 20
children (each a consenting child with probability p) held at least once. Consenting children's
faces here are 1-3 years after their template; at a school event in the year of the picture day
they would be nearer (the figures for them are pessimistic).

    .venv/bin/python scripts/benchmark_consent.py [--splits 50] [--out bench-out/consent.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark_children import load_children  # noqa: E402  (the cached embeddings of children_dev)

MARGINS = (0.0, 0.03, 0.06, 0.09, 0.12)
SHARES = (0.3, 0.6, 0.9)
CLASS_SIZE = 20
CLASS_PHOTOS = 200  # simulated per split and share


def decisions(index, vectors: np.ndarray, settings, margin: float | None) -> list[str]:
    """The product's decision for each vector as a one-face photo; with ``margin``, after the
    consent rule."""
    from optout_guard.consent import clear_consenting
    from optout_guard.matching import decide_faces
    from optout_guard.types import Box, Face

    face = Face(Box(0, 0, 100, 100), 1.0, np.zeros((5, 2), np.float32))
    found = index.search(vectors, settings=settings)
    matches = [decide_faces([face], [f], settings.thresholds)[0] for f in found]
    if margin is not None:
        recognised = index.recognise(vectors)
        matches = [clear_consenting(m, r, settings.block_distance, margin) for m, r in zip(matches, recognised, strict=True)]
    return [m.decision.value for m in matches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--opted-out", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "consent.json")
    args = parser.parse_args()
    from optout_guard.config import Settings
    from optout_guard.consent import ConsentRecord
    from optout_guard.index import FaceIndex, Template

    meta, vectors, _fg, utk, people = load_children()
    settings = Settings(cohort=False)

    def plan(person: str) -> tuple[int, list[int]] | None:
        """A reference photo at 5-12 and the photos 1-3 years after it."""
        photos = sorted(people[person], key=lambda i: meta[i]["age"])
        for first in (i for i in photos if 5 <= meta[i]["age"] <= 12):
            later = [i for i in photos if meta[first]["age"] + 1 <= meta[i]["age"] <= meta[first]["age"] + 3]
            if later:
                return first, later
        return None

    usable = sorted(p for p in people if plan(p) is not None)
    rng = random.Random(2026)
    keys = ["none", *(f"{m:.2f}" for m in MARGINS)]
    figures: dict[str, dict] = {}
    for share in SHARES:
        t = {k: {"appearances": 0, "caught": 0, "blocked": 0, "cleared_by_consenting": 0, "consenting_faces": 0,
                 "consenting_held": 0, "other_faces": 0, "other_held": 0, "class_photos": 0, "class_held": 0,
                 "class_faces_held": 0} for k in keys}  # fmt: skip
        for _ in range(args.splits):
            chosen = rng.sample(usable, min(args.opted_out, len(usable) - 5))
            index = FaceIndex("consent-bench")
            appearances: list[int] = []
            for person in chosen:
                ref, later = plan(person)  # type: ignore[misc]
                index.add(Template(f"s{person}", "", f"{ref:064d}", "", ""), vectors[ref])
                appearances += later
            consenting_faces: list[tuple[str, int]] = []  # (person, photo): faces of consenting children
            other_faces: list[tuple[str, int]] = []  # faces of children with no template
            for person in (p for p in people if p not in chosen):
                planned = plan(person)
                if planned is not None and rng.random() < share:
                    ref, later = planned
                    index.record_consent(ConsentRecord(f"c{person}", "sis", "", ""))
                    index.add_consenting_template(Template(f"c{person}", "", f"{ref:064d}", "", ""), vectors[ref])
                    consenting_faces += [(person, i) for i in later]
                else:
                    other_faces += [(person, i) for i in people[person] if 5 <= meta[i]["age"] <= 14]
            for i in utk:
                if rng.random() < share:
                    index.record_consent(ConsentRecord(f"c{meta[i]['person']}", "sis", "", ""))
                    index.add_consenting_template(Template(f"c{meta[i]['person']}", "", f"{i:064d}", "", ""), vectors[i])
                else:
                    other_faces.append((meta[i]["person"], i))
            truth = [f"s{meta[i]['person']}" for i in appearances]
            found = index.search(vectors[appearances], settings=settings)
            plain = decisions(index, vectors[appearances], settings, None)
            c_plain = decisions(index, vectors[[i for _, i in consenting_faces]], settings, None) if consenting_faces else []
            o_plain = decisions(index, vectors[[i for _, i in other_faces]], settings, None)
            # Class photos: CLASS_SIZE distinct children, each consenting with probability `share`
            # (drawn from the consenting children's faces), else from the others'.
            classes = []
            for _ in range(CLASS_PHOTOS):
                members, seen = [], set()
                while len(members) < CLASS_SIZE:
                    pool = consenting_faces if consenting_faces and rng.random() < share else other_faces
                    n = rng.randrange(len(pool))
                    if pool[n][0] not in seen:
                        seen.add(pool[n][0])
                        members.append((pool is consenting_faces, n))
                classes.append(members)
            for key in keys:
                margin = None if key == "none" else float(key)
                d = plain if margin is None else decisions(index, vectors[appearances], settings, margin)
                dc = c_plain if margin is None else (
                    decisions(index, vectors[[i for _, i in consenting_faces]], settings, margin) if consenting_faces else [])
                do = o_plain if margin is None else decisions(index, vectors[[i for _, i in other_faces]], settings, margin)
                row = t[key]
                for before, after, f, who in zip(plain, d, found, truth, strict=True):
                    right = bool(f) and f[0].student_id == who
                    row["appearances"] += 1
                    row["blocked"] += after == "block" and right
                    row["caught"] += after != "clear"
                    row["cleared_by_consenting"] += before != "clear" and after == "clear"
                row["consenting_faces"] += len(dc)
                row["consenting_held"] += sum(x != "clear" for x in dc)
                row["other_faces"] += len(do)
                row["other_held"] += sum(x != "clear" for x in do)
                for members in classes:
                    held = sum((dc[n] if consenting else do[n]) != "clear" for consenting, n in members)
                    row["class_photos"] += 1
                    row["class_held"] += held > 0
                    row["class_faces_held"] += held
        out = {}
        for key, row in t.items():
            n = row["appearances"]
            held_c = row["consenting_held"] / max(1, row["consenting_faces"])
            held_o = row["other_held"] / max(1, row["other_faces"])
            out[key] = {
                "caught": round(row["caught"] / n, 4),
                "blocked": round(row["blocked"] / n, 4),
                "opted_out_cleared_by_consenting": round(row["cleared_by_consenting"] / n, 4),
                "consenting_faces_held": round(held_c, 4),
                "other_faces_held": round(held_o, 4),
                "faces_held_at_share": round(share * held_c + (1 - share) * held_o, 4),
                "class_photos_held": round(row["class_held"] / row["class_photos"], 4),
                "faces_to_review_per_class_photo": round(row["class_faces_held"] / row["class_photos"], 2),
                "counts": row,
            }
            print(f"share {share:.0%} margin {key}: " + json.dumps({k: v for k, v in out[key].items() if k != "counts"}),
                  flush=True)  # fmt: skip
        figures[f"{share:.0%} consenting"] = out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"splits": args.splits, "opted_out_per_split": args.opted_out, "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
