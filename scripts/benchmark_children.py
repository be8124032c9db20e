"""Children: what the product's own rules give on children's photos a year or more after enrolment.

On ../shared/data/children_dev (half of FG-NET: 41 people photographed across childhood; and 623
UTKFace children aged 5-12, one photo each). Every photo goes through the product's loader,
detector, quality gate and embedder once (`enroll.reference_embedding`: the largest face). Then,
for each of --splits random "schools": --opted-out FG-NET children are enrolled from their photo(s)
at ages 5-12 (one reference, or two a year apart), their photos taken 1-3 years after the newest
reference are the *appearances* to catch, and every other child (the other FG-NET children's photos
at ages 5-14, and the UTKFace children) is a face that must not be held. Each face is decided with
the product's search (`FaceIndex.search`) and rules (`matching.decide_faces`) at the shipped
thresholds, as a one-face photo. No cohort (a school's own delivery is not in this data).

Also, as a first look at deciding once per child across an event (issue 26, §3): an opted-out
child's two later appearances averaged (and two photos of another child averaged), decided with
the same search at pooled thresholds — an upper bound, since FG-NET photos are up to years apart.

    .venv/bin/python scripts/benchmark_children.py [--splits 50] [--out bench-out/children.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "children_dev"


def embed_all(cache: Path) -> tuple[list[dict], np.ndarray]:
    """Every usable photo's embedding (cached under bench-out: it takes a few minutes)."""
    if cache.exists():
        doc = np.load(cache, allow_pickle=False)
        return json.loads(str(doc["meta"])), doc["vectors"]
    from optout_guard.config import Settings
    from optout_guard.enroll import reference_embedding
    from optout_guard.face_models import model_bundle
    from optout_guard.models import get_models

    settings, models = Settings(), get_models()
    meta, vectors = [], []
    with open(DATA / "fgnet" / "fgnet_metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    items = [("fgnet", r["subject_id"], int(r["age"]), DATA / "fgnet" / "images" / r["filename"]) for r in rows]
    items += [("utk", f"u{i}", int(p.name.split("_")[0]), p) for i, p in enumerate(sorted((DATA / "utkface_5_12").glob("*.jpg")))]
    started = time.perf_counter()
    for n, (source, person, age, path) in enumerate(items):
        vector = reference_embedding(path, settings, model_bundle(models))
        if not isinstance(vector, str):
            meta.append({"source": source, "person": person, "age": age})
            vectors.append(vector)
        if n % 200 == 0:
            print(f"  embedded {n}/{len(items)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=np.stack(vectors), meta=json.dumps(meta))
    return meta, np.stack(vectors)


def load_children() -> tuple[list[dict], np.ndarray, list[int], list[int], dict[str, list[int]]]:
    """(meta, vectors, FG-NET rows, UTKFace rows, FG-NET person -> rows) from the cache."""
    meta, vectors = embed_all(ROOT / "bench-out" / "children_embeddings.npz")
    fg = [i for i, m in enumerate(meta) if m["source"] == "fgnet"]
    utk = [i for i, m in enumerate(meta) if m["source"] == "utk"]
    people: dict[str, list[int]] = {}
    for i in fg:
        people.setdefault(meta[i]["person"], []).append(i)
    return meta, vectors, fg, utk, people


def decide(index, vectors: np.ndarray, settings) -> list[str]:
    """The product's decision for each vector as a one-face photo: block / review / clear."""
    from optout_guard.matching import decide_faces
    from optout_guard.types import Box, Face

    face = Face(Box(0, 0, 100, 100), 1.0, np.zeros((5, 2), np.float32))
    found = index.search(vectors, settings=settings)
    return [decide_faces([face], [f], settings.thresholds)[0].decision.value for f in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--opted-out", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "children.json")
    args = parser.parse_args()
    from optout_guard.config import Settings
    from optout_guard.events import POOLED_BLOCK, pooled
    from optout_guard.index import FaceIndex, Template

    meta, vectors, fg, utk, people = load_children()
    settings = Settings(cohort=False)
    # Who can be an opted-out child here: a photo at 5-12 and one 1-3 years after it.
    def plan(person: str, refs: int) -> tuple[list[int], list[int]] | None:
        photos = sorted(people[person], key=lambda i: meta[i]["age"])
        for first in (i for i in photos if 5 <= meta[i]["age"] <= 12):
            chosen = [first]
            if refs == 2:
                nxt = next((i for i in photos if meta[i]["age"] == meta[first]["age"] + 1), None)
                if nxt is None:
                    continue
                chosen.append(nxt)
            newest = max(meta[i]["age"] for i in chosen)
            later = [i for i in photos if newest + 1 <= meta[i]["age"] <= newest + 3]
            if later:
                return chosen, later
        return None

    rng = random.Random(2026)
    figures: dict[str, dict] = {}
    for refs in (1, 2):
        usable = sorted(p for p in people if plan(p, refs) is not None)
        totals = {"appearances": 0, "blocked": 0, "reviewed": 0, "others": 0, "others_blocked": 0, "others_held": 0,
                  "pairs": 0, "pooled_blocked": 0, "pooled_caught": 0, "other_pairs": 0, "other_pairs_blocked": 0,
                  "other_pairs_held": 0}  # fmt: skip
        for _ in range(args.splits):
            chosen = rng.sample(usable, min(args.opted_out, len(usable) - 5))
            index = FaceIndex("children-bench")
            later_of: dict[str, list[int]] = {}
            for person in chosen:
                refs_i, later = plan(person, refs)  # type: ignore[misc]
                for i in refs_i:
                    index.add(Template(f"s{person}", f"{person}-{i}", f"{i:064d}", "", ""), vectors[i])
                later_of[person] = later
            appearances = [i for p in chosen for i in later_of[p]]
            truth = [f"s{meta[i]['person']}" for i in appearances]
            found = index.search(vectors[appearances], settings=settings)
            decisions = decide(index, vectors[appearances], settings)
            for d, f, t in zip(decisions, found, truth, strict=True):
                totals["appearances"] += 1
                right = bool(f) and f[0].student_id == t
                totals["blocked"] += d == "block" and right
                totals["reviewed"] += d == "review" or (d == "block" and not right)
            others = [i for i in fg if meta[i]["person"] not in chosen and 5 <= meta[i]["age"] <= 14] + utk
            od = decide(index, vectors[others], settings)
            totals["others"] += len(others)
            totals["others_blocked"] += sum(d == "block" for d in od)
            totals["others_held"] += sum(d != "clear" for d in od)
            # Two appearances of one child pooled as the product pools an event's faces (events.pooled).
            pooled_block, pooled_review = POOLED_BLOCK, 0.40
            for p in chosen:
                later = later_of[p]
                if len(later) < 2:
                    continue
                f = index.search(pooled(vectors[later[:2]])[None, :], settings=settings)[0]
                totals["pairs"] += 1
                if f and f[0].student_id == f"s{p}":
                    totals["pooled_blocked"] += f[0].distance <= pooled_block
                    totals["pooled_caught"] += f[0].distance <= pooled_review
            other_people = [p for p in people if p not in chosen]
            for p in other_people:
                photos = [i for i in people[p] if 5 <= meta[i]["age"] <= 14]
                if len(photos) < 2:
                    continue
                f = index.search(pooled(vectors[photos[:2]])[None, :], settings=settings)[0]
                totals["other_pairs"] += 1
                totals["other_pairs_blocked"] += bool(f) and f[0].distance <= pooled_block
                totals["other_pairs_held"] += bool(f) and f[0].distance <= pooled_review
        n, o = totals["appearances"], totals["others"]
        summary = {
            "opted_out_children_usable": len(usable),
            "splits": args.splits,
            "caught": round((totals["blocked"] + totals["reviewed"]) / n, 4),
            "blocked": round(totals["blocked"] / n, 4),
            "others_blocked": round(totals["others_blocked"] / o, 4),
            "others_held": round(totals["others_held"] / o, 4),
            "pooled_pairs": totals["pairs"],
            "pooled_caught": round(totals["pooled_caught"] / max(1, totals["pairs"]), 4),
            "pooled_blocked": round(totals["pooled_blocked"] / max(1, totals["pairs"]), 4),
            "other_pairs_held": round(totals["other_pairs_held"] / max(1, totals["other_pairs"]), 4),
            "other_pairs_blocked": round(totals["other_pairs_blocked"] / max(1, totals["other_pairs"]), 4),
            "counts": totals,
        }
        figures[f"{refs} reference photo{'s' if refs > 1 else ''}"] = summary
        print(f"{refs} reference(s): {json.dumps(summary)}", flush=True)
    figures.update(cohort_floor(meta, vectors, people, plan, utk, fg, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))


LOSSES = (None, 0.05, 0.02, 0.0)  # None: the cohort without a catch floor (before issue 26 §2)
COHORT_SHARES = (0.10, 0.05, 0.03)  # cohort_review_share: the default, and districts that ask for fewer reviews


def cohort_floor(meta, vectors, people, plan, utk, fg, args) -> dict:
    """The district's cohort on children, with and without the catch floor (issue 26 §2): half of the
    other FG-NET children and half of the UTKFace children are the delivery's cohort, the other
    halves are the faces that must not be held. One reference photo. The floor's curve is
    children_dev's own (no previous-year pairs here): in-sample, which the held-back half checks."""
    from optout_guard.cohort import calibrate_cohort
    from optout_guard.config import Settings
    from optout_guard.index import FaceIndex, Template

    rng = random.Random(2027)
    usable = sorted(p for p in people if plan(p, 1) is not None)
    out: dict[str, dict] = {}
    totals = {(share, str(loss)): {"appearances": 0, "caught": 0, "blocked": 0, "others": 0, "others_held": 0, "reviews": []}
              for share, loss in [(0.0, "off"), *((s, x) for s in COHORT_SHARES for x in LOSSES)]}  # fmt: skip
    for _ in range(args.splits):
        chosen = rng.sample(usable, min(args.opted_out, len(usable) - 5))
        # The cohort: half of the other FG-NET children (their photos at 5-14: the same "camera" as
        # the students) and half of the UTKFace children; the other halves are the faces to clear.
        shuffled = rng.sample(utk, len(utk))
        other_people = rng.sample(sorted(p for p in people if p not in chosen), len(people) - len(chosen))
        in_cohort = set(other_people[: len(other_people) // 2])
        fg_cohort = [i for i in fg if meta[i]["person"] in in_cohort and 5 <= meta[i]["age"] <= 14]
        cohort, rest = shuffled[: len(utk) // 2] + fg_cohort, shuffled[len(utk) // 2 :]
        index = FaceIndex("children-bench")
        appearances = []
        for person in chosen:
            refs_i, later = plan(person, 1)
            for i in refs_i:
                index.add(Template(f"s{person}", f"{person}-{i}", f"{i:064d}", "", ""), vectors[i])
            appearances += later
        truth = [f"s{meta[i]['person']}" for i in appearances]
        others = [i for i in fg if meta[i]["person"] not in chosen and meta[i]["person"] not in in_cohort
                  and 5 <= meta[i]["age"] <= 14] + rest  # fmt: skip
        for share, loss in [(0.0, "off"), *((share, loss) for share in COHORT_SHARES for loss in LOSSES)]:
            index.cohort = None if loss == "off" else calibrate_cohort(
                index.embeddings, [t.student_id for t in index.templates], {f"s{p}": 1 for p in chosen}, vectors[cohort],
                block_bound=0.40, review_bound=0.50, review_share=share, digest="d", made_at="", source="bench",
                max_catch_loss=1.0 if loss is None else loss,
            )  # fmt: skip
            settings = Settings(cohort=True)
            row = totals[(share, str(loss))]
            row["reviews"].append(index.cohort.thresholds["1"][1] if index.cohort is not None else 0.50)
            found = index.search(vectors[appearances], settings=settings)
            for d, f, t in zip(decide(index, vectors[appearances], settings), found, truth, strict=True):
                row["appearances"] += 1
                row["caught"] += d != "clear"
                row["blocked"] += d == "block" and bool(f) and f[0].student_id == t
            od = decide(index, vectors[others], settings)
            row["others"] += len(od)
            row["others_held"] += sum(d != "clear" for d in od)
    for (share, loss), row in totals.items():
        if loss == "off":
            label = "no cohort"
        else:
            floor = "no catch floor" if loss == "None" else f"catch floor: at most {float(loss):.0%} of catch lost"
            label = f"cohort aiming at {share:.0%} held, {floor}"
        out[label] = {
            "caught": round(row["caught"] / row["appearances"], 4),
            "blocked": round(row["blocked"] / row["appearances"], 4),
            "others_held": round(row["others_held"] / row["others"], 4),
            "review_1_reference_median": round(float(np.median(row["reviews"])), 4),
            "counts": {k: v for k, v in row.items() if k != "reviews"},
        }
        print(f"{label}: {json.dumps(out[label])}", flush=True)
    return out


if __name__ == "__main__":
    main()
