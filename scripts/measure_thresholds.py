"""Measure block/review distance thresholds on LFW, through optout-guard's own pipeline.

Open-set watchlist search, as optout-guard uses it: one reference photo each for --enrolled people
(seeded split), mated probes (their other photos) and non-mated probes (one photo each of people
never enrolled). For each probe the face nearest the photo centre is embedded (LFW photos are
centred on their subject) and searched against the gallery. Prints FNIR (misses) and FPIR (false
alerts) at a range of thresholds and writes the raw distances to --out (JSON, no embeddings).

    .venv/bin/python scripts/measure_thresholds.py [--enrolled 300] [--nonmated 1200] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from optout_guard.config import Settings
from optout_guard.detection import detect_faces
from optout_guard.embedding import embed_faces
from optout_guard.errors import ImageRejected
from optout_guard.images import load_image
from optout_guard.matching import pairwise_distances
from optout_guard.models import get_models

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw_deepfunneled_color250" / "lfw"


def central_embedding(path: str) -> np.ndarray | None:
    """Embedding of the face closest to the centre, or None when no face could be judged."""
    settings, models = Settings(), get_models()
    try:
        image = load_image(path, settings)
    except ImageRejected:
        return None
    faces = detect_faces(image, settings, models)
    if not faces:
        return None
    w, h = image.size
    centre = min(faces, key=lambda f: (f.box.x + f.box.w / 2 - w / 2) ** 2 + (f.box.y + f.box.h / 2 - h / 2) ** 2)
    embedded = embed_faces(image, [centre], settings, models)
    return embedded.vectors[0] if len(embedded.vectors) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrolled", type=int, default=300)
    parser.add_argument("--nonmated", type=int, default=1200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "thresholds.json")
    args = parser.parse_args()

    people = {p.name: sorted(p.glob("*.jpg")) for p in sorted(LFW.iterdir()) if p.is_dir()}
    rng = random.Random(args.seed)
    multi = sorted(n for n, photos in people.items() if len(photos) >= 2)
    single = sorted(n for n, photos in people.items() if len(photos) == 1)
    enrolled = rng.sample(multi, args.enrolled)
    others = rng.sample(sorted(set(single) | (set(multi) - set(enrolled))), args.nonmated)

    gallery_paths = [str(people[n][0]) for n in enrolled]
    mated = [(n, str(p)) for n in enrolled for p in people[n][1:3]]
    nonmated = [str(rng.choice(people[n])) for n in others]
    paths = gallery_paths + [p for _, p in mated] + nonmated

    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        vectors = list(pool.map(central_embedding, paths, chunksize=8))
    seconds = time.perf_counter() - started
    gallery_vecs = vectors[: len(gallery_paths)]
    usable = [i for i, v in enumerate(gallery_vecs) if v is not None]
    gallery = np.stack([gallery_vecs[i] for i in usable])
    names = [enrolled[i] for i in usable]

    def search(vec: np.ndarray | None) -> tuple[str | None, float]:
        if vec is None:
            return None, float("inf")
        d = pairwise_distances(vec[None, :], gallery)[0]
        j = int(np.argmin(d))
        return names[j], float(d[j])

    mated_rows = []
    for (name, _), vec in zip(mated, vectors[len(gallery_paths) : len(gallery_paths) + len(mated)], strict=True):
        if name not in names:
            continue
        best, dist = search(vec)
        mated_rows.append({"no_face": vec is None, "correct": best == name, "distance": dist})
    nonmated_dists = [search(v)[1] for v in vectors[len(gallery_paths) + len(mated) :]]
    nonmated_noface = sum(1 for v in vectors[len(gallery_paths) + len(mated) :] if v is None)

    per_photo = seconds / len(paths) * 1000
    print(f"{len(paths)} photos embedded in {seconds:.0f} s with {args.workers} workers ({per_photo:.0f} ms/photo)")
    print(f"gallery: {len(names)} people enrolled from 1 photo ({len(gallery_paths) - len(names)} reference photos unusable)")
    print(f"mated probes: {len(mated_rows)} ({sum(r['no_face'] for r in mated_rows)} with no judgeable face)")
    print(f"non-mated probes: {len(nonmated_dists)} ({nonmated_noface} with no judgeable face)")
    print(f"{'threshold':>9} {'FNIR':>7} {'FPIR':>7}   (FNIR: mated probe not found at or under threshold as the right person)")
    nm = np.array(nonmated_dists)
    for t in np.arange(0.30, 0.66, 0.025):
        hits = sum(1 for r in mated_rows if r["correct"] and r["distance"] <= t)
        fnir = 1 - hits / len(mated_rows)
        fpir = float(np.mean(nm <= t))
        print(f"{t:9.3f} {fnir:7.3f} {fpir:7.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seed": args.seed, "mated": mated_rows, "nonmated": nonmated_dists}, indent=1))
    print(f"raw distances: {args.out}")


if __name__ == "__main__":
    main()
