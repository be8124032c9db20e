"""Review load vs catch on LFW: gallery size, scopes, the hub penalty, cohort thresholds, look-alikes.

Issue 13's levers, measured with the product's own code (``FaceIndex.search`` with the settings,
``matching.decide_faces``, ``cohort.calibrate_cohort``) on the mirror-averaged LFW embeddings that
``scripts/benchmark_accuracy.py`` caches (run that first; the same pipeline embeds every photo).
There are no children's photos here: adults separate better, so read the *direction* and the
relative size of each change, not the absolute level a school will see.

Each split (seeded): N enrolled people with >= 4 photos (their first R photos are the references;
photos 4..8 are the mated probes, the same set for R = 1, 2, 3); a *cohort* of up to 600 people never
enrolled and never probes (one photo each: what the picture-day delivery gives); one photo of every
other never-enrolled person is a non-mated probe. A probe is one face decided alone.

    .venv/bin/python scripts/benchmark_galleries.py [--splits 5] [--out bench-out/galleries]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from optout_guard.cohort import MAX_COHORT, calibrate_cohort
from optout_guard.config import Settings
from optout_guard.index import FaceIndex, Template
from optout_guard.matching import decide_faces
from optout_guard.types import Box, Decision, Face

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench-out" / "accuracy" / "lfw_embeddings.npz"
FACE = Face(Box(0, 0, 100, 100), 0.9, np.zeros((5, 2), np.float32))
TODAY = Settings(lookalike_margin=1.5, cohort=False)  # the rules before issue 13
SHIPPED = Settings()  # relaxed look-alike rule, cohort on


@dataclass
class Data:
    names: list[str]
    person: dict[str, list[int]]  # photos (rows) per person, in a seeded order
    vectors: np.ndarray


def load(seed: int) -> Data:
    if not CACHE.exists():
        raise SystemExit(f"no cached LFW embeddings at {CACHE}: run scripts/benchmark_accuracy.py first")
    data = np.load(CACHE, allow_pickle=False)
    paths = [str(p) for p in data["paths"]]
    ok = np.array([str(s) == "ok" for s in data["status"]])
    vec, flip = data["vec"], data["flip"]
    averaged = vec + flip
    averaged /= np.linalg.norm(averaged, axis=1, keepdims=True) / np.linalg.norm(vec, axis=1, keepdims=True)
    person: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        if ok[i]:  # a gated photo would be review in the product: not a probe of matching
            person.setdefault(Path(p).parent.name, []).append(i)
    rng = random.Random(seed)
    person = {n: rng.sample(rows, len(rows)) for n, rows in sorted(person.items())}
    return Data(sorted(person), person, averaged.astype(np.float32))


@dataclass
class Split:
    enrolled: list[str]
    cohort: list[int]
    mated: list[tuple[str, int]]
    nonmated: list[int]


def split(data: Data, n: int, seed: int, cohort_size: int = MAX_COHORT) -> Split:
    rng = random.Random(seed * 7919 + n)
    four = [p for p in data.names if len(data.person[p]) >= 4]
    enrolled = sorted(rng.sample(four, min(n, len(four))))
    others = [p for p in data.names if p not in set(enrolled)]
    rng.shuffle(others)
    cohort_people, probe_people = others[:cohort_size], others[cohort_size:]
    mated = [(p, i) for p in enrolled for i in data.person[p][3:8]]
    return Split(enrolled, [data.person[p][0] for p in cohort_people], mated, [data.person[p][0] for p in probe_people])


def build_index(data: Data, s: Split, refs: int | dict[str, int]) -> FaceIndex:
    index = FaceIndex("benchmark")
    for p in s.enrolled:
        r = refs if isinstance(refs, int) else refs[p]
        for row in data.person[p][:r]:
            index.add(Template(p, f"{p}/{row}", str(row), "", ""), data.vectors[row])
    return index


def calibrate(
    index: FaceIndex,
    data: Data,
    s: Split,
    share: float = 0.10,
    penalties: bool = True,
    thresholds: bool = True,
    review_bound: float = SHIPPED.review_distance,
    max_catch_loss: float = SHIPPED.max_catch_loss,
) -> None:
    counts = {p: index.references(p) for p in index.protected_students()}
    found = calibrate_cohort(
        index.embeddings,
        [t.student_id for t in index.templates],
        counts,
        data.vectors[s.cohort],
        block_bound=SHIPPED.block_distance,
        review_bound=review_bound,
        review_share=share,
        digest="lfw",
        made_at="",
        source="LFW cohort",
        penalise_hubs=penalties,
        max_catch_loss=max_catch_loss,
    )
    index.cohort = replace(
        found, penalties=found.penalties if penalties else {}, thresholds=found.thresholds if thresholds else {}
    )


def rates(index: FaceIndex, data: Data, s: Split, settings: Settings, only: frozenset[str] | None = None) -> dict[str, float]:
    mated = [(p, i) for p, i in s.mated if only is None or p in only]
    out: dict[str, float] = {}
    if mated:
        found = index.search(data.vectors[[i for _, i in mated]], settings=settings, only=only)
        d = [decide_faces([FACE], [c], settings.thresholds)[0] for c in found]
        right = np.array([m.student_id == p for m, (p, _) in zip(d, mated, strict=True)])
        block = np.array([m.decision is Decision.BLOCK for m in d])
        review = np.array([m.decision is Decision.REVIEW for m in d])
        out |= {
            "enrolled_blocked": float(np.mean(block & right)),
            "enrolled_blocked_as_another": float(np.mean(block & ~right)),
            "enrolled_caught": float(np.mean(block | review)),
            "enrolled_missed": float(np.mean(~(block | review))),
            "blocks_naming_the_wrong_student": int(np.sum(block & ~right)),
            "mated_probes": len(mated),
        }
    found = index.search(data.vectors[s.nonmated], settings=settings, only=only)
    d = [decide_faces([FACE], [c], settings.thresholds)[0] for c in found]
    out["others_blocked"] = float(np.mean([m.decision is Decision.BLOCK for m in d]))
    out["others_held"] = float(np.mean([m.decision is Decision.REVIEW for m in d]))
    out["nonmated_probes"] = len(s.nonmated)
    return out


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = runs[0].keys()
    counts = {k for k in keys if k.endswith("probes") or k.startswith("blocks_")}
    return (
        {k: round(float(np.mean([r[k] for r in runs])), 4) for k in keys if k not in counts}
        | {k: int(sum(r[k] for r in runs)) for k in counts}  # totals over the splits
        | {k + "_sd": round(float(np.std([r[k] for r in runs])), 4) for k in keys if k not in counts}
    )


def pct(x: float) -> str:
    return f"{x * 100:5.1f}%"


def line(label: str, r: dict[str, float]) -> str:
    return (
        f"   {label:<44} blocked {pct(r['enrolled_blocked'])} (wrong student: {r['blocks_naming_the_wrong_student']} of {r['mated_probes']})  "
        f"caught {pct(r['enrolled_caught'])}  missed {pct(r['enrolled_missed'])}  |  others held {pct(r['others_held'])}  "
        f"blocked {pct(r['others_blocked'])}"
    )


def global_review_at_catch(index: FaceIndex, data: Data, s: Split, catch: float) -> dict[str, float]:
    """Plain thresholds (block 0.40), the review distance lowered until catch falls to ``catch``."""
    best = None
    for review in np.arange(0.50, 0.38, -0.0025):
        settings = replace(TODAY, review_distance=float(max(review, TODAY.block_distance)))
        r = rates(index, data, s, settings)
        best = r | {"review_distance": round(float(review), 4)}
        if r["enrolled_caught"] <= catch:
            break
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "galleries")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict = {"splits": args.splits, "note": "LFW adults, mirror-averaged embeddings of the product's pipeline"}
    seeds = list(range(2026, 2026 + args.splits))
    datas = {seed: load(seed) for seed in seeds}

    by_size = []
    for refs in (1, 3):
        print(f"Gallery size ({refs} reference photo(s) each; {args.splits} splits, mean):")
        for n in (10, 25, 100, 300, 1000):
            rows: dict[str, list[dict[str, float]]] = {"today": [], "all three": []}
            for seed in seeds:
                d = datas[seed]
                s = split(d, n, seed)
                index = build_index(d, s, refs)
                rows["today"].append(rates(index, d, s, TODAY))
                calibrate(index, d, s)
                rows["all three"].append(rates(index, d, s, SHIPPED))
            n_real = len(split(datas[seeds[0]], n, seeds[0]).enrolled)
            print(f" {n_real} enrolled")
            entry: dict = {"enrolled": n_real, "references": refs}
            for label, runs in rows.items():
                entry[label] = mean_of(runs)
                print(line(label, entry[label]))
            by_size.append(entry)
    results["by_gallery_size"] = by_size

    print("\nEach lever alone and together:")
    levers = []
    for n, refs in ((300, 1), (300, 2), (1000, 3)):
        runs: dict[str, list[dict[str, float]]] = {}
        for seed in seeds:
            d = datas[seed]
            s = split(d, n, seed)
            index = build_index(d, s, refs)
            runs.setdefault("today (0.40/0.50, strict look-alike rule)", []).append(rates(index, d, s, TODAY))
            runs.setdefault(f"relaxed look-alike rule (margin {SHIPPED.lookalike_margin})", []).append(
                rates(index, d, s, replace(TODAY, lookalike_margin=SHIPPED.lookalike_margin))
            )
            calibrate(index, d, s, thresholds=False)
            hub = rates(index, d, s, replace(TODAY, cohort=True))
            runs.setdefault("hub penalty", []).append(hub)
            index.cohort = None
            runs.setdefault("global review distance at the hub penalty's catch", []).append(
                global_review_at_catch(index, d, s, hub["enrolled_caught"])
            )
            calibrate(index, d, s, penalties=False)
            runs.setdefault("cohort thresholds (10% share)", []).append(rates(index, d, s, replace(TODAY, cohort=True)))
            calibrate(index, d, s, max_catch_loss=1.0)
            runs.setdefault("all three, no catch floor (before issue 26)", []).append(rates(index, d, s, SHIPPED))
            calibrate(index, d, s)
            runs.setdefault("all three (shipped)", []).append(rates(index, d, s, SHIPPED))
        print(f" {len(s.enrolled)} enrolled, {refs} reference photo{'s' if refs > 1 else ''}")
        entry = {"enrolled": len(s.enrolled), "references": refs}
        for label, r in runs.items():
            entry[label] = mean_of(r)
            extra = f"  (review {entry[label]['review_distance']:.3f})" if "review_distance" in entry[label] else ""
            print(line(label, entry[label]) + extra)
        levers.append(entry)
    results["levers"] = levers

    print("\nReference photos per student, fixed vs cohort thresholds (300 enrolled):")
    per_count = []
    for refs in (1, 2, 3, "mixed"):
        runs = {}
        for seed in seeds:
            d = datas[seed]
            s = split(d, 300, seed)
            mix = {p: 1 + i % 3 for i, p in enumerate(s.enrolled)}
            index = build_index(d, s, mix if refs == "mixed" else refs)
            runs.setdefault("fixed 0.40/0.50", []).append(rates(index, d, s, TODAY))
            calibrate(index, d, s)
            runs.setdefault("cohort, all three", []).append(rates(index, d, s, SHIPPED))
            runs.setdefault("thresholds", []).append(
                {f"{g}_{k}": v for g, (b, r) in index.cohort.thresholds.items() for k, v in (("block", b), ("review", r))}  # type: ignore[union-attr]
            )
        label = "1/2/3 in thirds" if refs == "mixed" else f"{refs}"
        print(f" {label} reference photo(s)")
        entry = {"references": label}
        for k, r in runs.items():
            entry[k] = mean_of(r)
            if k != "thresholds":
                print(line(k, entry[k]))
        print(
            "   cohort thresholds (block/review): "
            + ", ".join(
                f"{g}: {entry['thresholds'][g + '_block']:.3f}/{entry['thresholds'][g + '_review']:.3f}"
                for g in ("1", "2", "3+")
                if g + "_block" in entry["thresholds"]
            )
        )
        per_count.append(entry)
    results["by_reference_count"] = per_count

    print(
        "\nCohort review share: target vs realised held rate on people outside the cohort (300 enrolled; the review"
        "\ndistance allowed to widen past 0.50 here, to test the calibration itself; the product only narrows it):"
    )
    target_rows = []
    for refs in (1, 2):
        for share in (0.05, 0.10, 0.20):
            runs_t = []
            for seed in seeds:
                d = datas[seed]
                s = split(d, 300, seed)
                index = build_index(d, s, refs)
                calibrate(index, d, s, share=share, review_bound=1.5, max_catch_loss=1.0)  # the calibration alone
                runs_t.append(rates(index, d, s, SHIPPED))
            r = mean_of(runs_t)
            target_rows.append({"references": refs, "target": share} | r)
            print(
                f"   {refs} ref, target {pct(share)}: realised held {pct(r['others_held'])} ± {pct(r['others_held_sd'])}, "
                f"caught {pct(r['enrolled_caught'])}, blocked {pct(r['enrolled_blocked'])}"
            )
    results["cohort_target_vs_realised"] = target_rows

    look = []
    for n, refs in ((1000, 3), (300, 1)):
        print(f"\nRelaxed look-alike rule alone ({n} enrolled, {refs} reference photo(s), fixed thresholds):")
        for margin in (1.5, 0.15, 0.10, 0.075, 0.05, 0.0):
            runs_m = []
            for seed in seeds:
                d = datas[seed]
                s = split(d, n, seed)
                index = build_index(d, s, refs)
                runs_m.append(rates(index, d, s, replace(TODAY, lookalike_margin=margin)))
            r = mean_of(runs_m)
            look.append({"enrolled": n, "references": refs, "margin": margin} | r)
            print(line(f"margin {margin}" + (" (old rule)" if margin == 1.5 else ""), r))
    results["lookalike_margin"] = look

    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "galleries.json").write_text(json.dumps(results, indent=1))
    print(f"\n{results['seconds']:.0f} s; figures in {args.out / 'galleries.json'}")


if __name__ == "__main__":
    main()
