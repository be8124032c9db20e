"""Accuracy of optout-guard's own pipeline on LFW: 10-fold verification and open-set watchlist search.

Every LFW photo goes through the product's loader, detector (CenterFace), 5-point landmarks,
quality gates and embedder; the face nearest the photo centre is the photo's subject (LFW photos
are centred on it). Embeddings are cached in bench-out/ (outside git) under the model fingerprint.

1. Verification: the official pairs.txt, 10 folds, threshold chosen on 9 folds and tested on the
   10th. Photos with no detected face count as errors ("as shipped"); a second figure embeds those
   photos through a fall-back (HOG, then a fixed centre box) to show the model's own accuracy.
2. Watchlist (open-set 1:N, ISO/IEC 19795-1 / NIST FRVT terms): --enrolled people with >= 2 photos
   are enrolled (seeded split); mated probes are their other photos (at most --probes-per-person),
   non-mated probes one photo each of every person never enrolled. A mated probe is a miss at
   threshold t unless the right person is the closest and within t (FNIR); a non-mated probe is a
   false alert if any enrolled person is within t (FPIR). FNIR at FPIR 0.1/1/5% (bootstrap 95% CI)
   and both rates at the shipped thresholds (Wilson 95% CI), for 1/2/3 reference photos and several
   ways to combine them, with and without flip averaging and score normalisation.
3. The thresholds the README's rule gives, a DET plot (PNG) and every figure as JSON.

    .venv/bin/python scripts/benchmark_accuracy.py [--workers 2] [--enrolled 1000] [--out bench-out/accuracy]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from optout_guard.calibration import FNIR_TARGET as REVIEW_FNIR
from optout_guard.calibration import FPIR_TARGET as BLOCK_FPIR
from optout_guard.calibration import rule_thresholds, threshold_at_fpir
from optout_guard.config import Settings
from optout_guard.detection import detect_faces
from optout_guard.embedding import embed_chips, is_upright, sharpness
from optout_guard.errors import ImageRejected
from optout_guard.face_models import DlibAligner, ResNetEncoder
from optout_guard.matching import blocks_alone, mean_templates, pairwise_distances, student_distances
from optout_guard.media.photos import load_image
from optout_guard.models import get_models, model_files_fingerprint
from optout_guard.types import Box, Face

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "3 photos, min + mean, mirror-averaged (shipped)"  # what optout-guard does, with 3 reference photos
LFW_ROOT = ROOT.parent / "shared" / "data" / "lfw_deepfunneled_color250"
CACHE_VERSION = "3"
FPIR_POINTS = (0.001, 0.01, 0.05)
# The rule for the shipped thresholds (README "Thresholds", calibration.py): block where at most
# 0.1% of faces of people never enrolled are falsely blocked with ~1,000 people enrolled from 3
# photos each; review down to where at most 2% of photos of enrolled people are missed altogether.


# ---------------------------------------------------------------------------------------------
# Embedding every photo through the product's pipeline
# ---------------------------------------------------------------------------------------------


def _central(faces: list[Face], size: tuple[int, int]) -> Face:
    w, h = size
    return min(faces, key=lambda f: (f.box.x + f.box.w / 2 - w / 2) ** 2 + (f.box.y + f.box.h / 2 - h / 2) ** 2)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def embed_photo(path: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(status, embedding, embedding of the mirrored chip) of the photo's central face.

    status: "ok"; "gated: <reason>" (the product would say review, the embedding is still made for
    the fall-back figures); "fallback-hog" / "fallback-centre" (no face found by CenterFace: the
    product would find no face); "unreadable".
    """
    from optout_guard.detection import _landmarks  # the benchmark's fall-back only

    settings, models = Settings(), get_models()
    nan = np.full(128, np.nan, np.float32)
    try:
        image = load_image(path, settings)
    except ImageRejected:
        return "unreadable", nan, nan
    pixels = image.pages[0]
    faces = detect_faces(image, settings, models)
    status = "ok"
    if not faces:
        faces = detect_faces(image, Settings(detector="hog"), models)
        status = "fallback-hog"
    if not faces:
        h, w = pixels.shape[:2]
        box = np.array([w * 0.3, h * 0.3, w * 0.4, h * 0.4])  # LFW deep-funnelled: the face sits here
        faces = [Face(Box(*box), 0.0, _landmarks(pixels, box, models))]
        status = "fallback-centre"
    face = _central(faces, image.size)
    chip = DlibAligner().chips(pixels, [face], image.scale)[0]
    if status == "ok":
        if not is_upright(face):
            status = "gated: turned"
        elif face.box.w < settings.min_face_px:
            status = "gated: too small"
        elif sharpness(chip) < settings.min_sharpness:
            status = "gated: blurred"
    vectors = embed_chips([chip, np.ascontiguousarray(chip[:, ::-1])], ResNetEncoder(models))
    return status, vectors[0], vectors[1]


def embed_photo_plain(path: str) -> tuple[str, np.ndarray, np.ndarray]:
    """The baseline the issue measured: plain dlib (HOG upsampled once, the face nearest the
    centre, 5-point landmarks, the same ResNet), no quality gate. No face: "no face"."""
    from PIL import Image

    models = get_models()
    nan = np.full(128, np.nan, np.float32)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    rects = models.hog(pixels, 1)
    if len(rects) == 0:
        return "no face", nan, nan
    h, w = pixels.shape[:2]
    rect = min(rects, key=lambda r: ((r.left() + r.right()) / 2 - w / 2) ** 2 + ((r.top() + r.bottom()) / 2 - h / 2) ** 2)
    box = np.array([rect.left(), rect.top(), rect.right() - rect.left() + 1, rect.bottom() - rect.top() + 1], np.float32)
    from optout_guard.detection import _landmarks

    face = Face(Box(*box), 1.0, _landmarks(pixels, box, models))
    chip = DlibAligner().chips(pixels, [face], 1.0)[0]
    vectors = embed_chips([chip, np.ascontiguousarray(chip[:, ::-1])], ResNetEncoder(models))
    return "ok", vectors[0], vectors[1]


def load_embeddings(
    paths: list[str], workers: int, cache: Path, embed: Callable[[str], tuple[str, np.ndarray, np.ndarray]] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, float]:
    settings = Settings()
    embed = embed or embed_photo
    variant = "" if embed is embed_photo else f"|{embed.__name__}"
    key = f"{CACHE_VERSION}{variant}|{model_files_fingerprint()}|{settings.detector}|{settings.detect_min_face_px}|{settings.min_face_px}|{settings.min_sharpness}"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if str(data["key"]) == key and list(data["paths"]) == paths:
            print(f"embeddings from cache {cache}")
            return list(data["status"]), data["vec"], data["flip"], float(data["seconds"])
    print(f"embedding {len(paths)} photos with {workers} workers (cached for later runs) ...", flush=True)
    started = time.perf_counter()
    # One BLAS / OpenCV thread per worker process (as the product's own workers do): no oversubscription.
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker) as pool:
        results = []
        for i, r in enumerate(pool.map(embed, paths, chunksize=16)):
            results.append(r)
            if (i + 1) % 2000 == 0:
                print(f"  {i + 1} photos, {time.perf_counter() - started:.0f} s", flush=True)
    seconds = time.perf_counter() - started
    status = [r[0] for r in results]
    vec = np.stack([r[1] for r in results])
    flip = np.stack([r[2] for r in results])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, key=key, paths=np.array(paths), status=np.array(status), vec=vec, flip=flip, seconds=seconds)
    return status, vec, flip, seconds


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def fnir_at(mated: np.ndarray, t: float) -> float:
    """mated: per probe, the distance to the right person when they are the closest, else inf."""
    return float(np.mean(mated > t))


def fnir_at_fpir(mated: np.ndarray, nonmated: np.ndarray, fpir: float, rng: np.random.Generator, boots: int = 500) -> dict:
    t = threshold_at_fpir(nonmated, fpir)
    point = fnir_at(mated, t)
    samples = []
    for _ in range(boots):
        m = mated[rng.integers(0, len(mated), len(mated))]
        n = nonmated[rng.integers(0, len(nonmated), len(nonmated))]
        samples.append(fnir_at(m, threshold_at_fpir(n, fpir)))
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return {
        "fpir": fpir,
        "threshold": round(t, 4),
        "fnir": round(point, 4),
        "fnir_ci95": [round(float(lo), 4), round(float(hi), 4)],
    }


def rates_at(mated: np.ndarray, nonmated: np.ndarray, t: float) -> dict:
    misses, alerts = int(np.sum(mated > t)), int(np.sum(nonmated <= t))
    return {
        "threshold": t,
        "fnir": round(misses / len(mated), 4),
        "fnir_ci95": [round(v, 4) for v in wilson(misses, len(mated))],
        "fpir": round(alerts / len(nonmated), 4),
        "fpir_ci95": [round(v, 4) for v in wilson(alerts, len(nonmated))],
    }


# ---------------------------------------------------------------------------------------------
# 1. Verification
# ---------------------------------------------------------------------------------------------


def read_pairs(path: Path) -> tuple[list[tuple[str, str, bool]], int]:
    lines = path.read_text().splitlines()
    folds, _per_fold = (int(v) for v in lines[0].split())
    pairs = []
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) == 3:
            pairs.append(
                (f"{parts[0]}/{parts[0]}_{int(parts[1]):04d}.jpg", f"{parts[0]}/{parts[0]}_{int(parts[2]):04d}.jpg", True)
            )
        else:
            pairs.append(
                (f"{parts[0]}/{parts[0]}_{int(parts[1]):04d}.jpg", f"{parts[2]}/{parts[2]}_{int(parts[3]):04d}.jpg", False)
            )
    return pairs, folds


def ten_fold(distances: np.ndarray, same: np.ndarray, folds: int) -> tuple[float, float, list[float]]:
    """Standard LFW protocol: the best threshold on 9 folds, accuracy on the 10th. NaN distance = error."""
    fold = np.repeat(np.arange(folds), len(same) // folds)
    accs, thresholds = [], []
    finite = np.where(np.isfinite(distances), distances, np.inf)
    for k in range(folds):
        train, test = fold != k, fold == k
        grid = np.unique(np.round(finite[train & np.isfinite(finite)], 4))
        best = max(grid, key=lambda t: np.mean((finite[train] <= t) == same[train]))
        thresholds.append(float(best))
        predicted = finite[test] <= best
        correct = (predicted == same[test]) & np.isfinite(distances[test])  # no embedding: an error
        accs.append(float(np.mean(correct)))
    return float(np.mean(accs)), float(np.std(accs)), thresholds


# ---------------------------------------------------------------------------------------------
# 2. Watchlist
# ---------------------------------------------------------------------------------------------


def search(
    probes: np.ndarray, gallery: np.ndarray, owner: np.ndarray, n_people: int, fusion: str, cohort: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(closest person, distance to them, distance to the second closest) per probe, combining
    each person's photos by ``fusion``."""
    d = pairwise_distances(probes, gallery)
    if fusion == "min":
        per = np.full((len(probes), n_people), np.inf)
        np.minimum.at(per.T, owner, d.T)
    elif fusion == "mean-embedding":
        per = pairwise_distances(probes, mean_templates(gallery, owner, n_people))
    else:  # "min+mean": what optout-guard ships (matching.student_distances)
        per = student_distances(d, owner, pairwise_distances(probes, mean_templates(gallery, owner, n_people)))
    if cohort is not None:  # symmetric score normalisation against a cohort (not shipped: see README)
        pc = pairwise_distances(probes, cohort)
        gc = pairwise_distances(mean_templates(gallery, owner, n_people), cohort)
        z = 0.5 * ((per - pc.mean(1)[:, None]) / pc.std(1)[:, None] + (per - gc.mean(1)[None, :]) / gc.std(1)[None, :])
        per = 0.45 + 0.05 * z  # mapped back to a distance-like scale; only the ranking/DET matter
    order = np.argsort(per, axis=1)[:, :2]
    rows = np.arange(len(probes))
    second = per[rows, order[:, 1]] if per.shape[1] > 1 else np.full(len(probes), np.inf)
    return order[:, 0], per[rows, order[:, 0]], second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--enrolled", type=int, default=1000)
    parser.add_argument("--probes-per-person", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--baseline", action="store_true", help="also embed every photo the plain dlib way (HOG) and compare")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "accuracy")
    args = parser.parse_args()
    total_started = time.perf_counter()
    lfw = LFW_ROOT / "lfw"
    paths_rel = sorted(f"{p.parent.name}/{p.name}" for p in lfw.glob("*/*.jpg"))
    status, vec, flip, embed_seconds = load_embeddings(
        [str(lfw / p) for p in paths_rel], args.workers, args.out / "lfw_embeddings.npz"
    )
    row = {p: i for i, p in enumerate(paths_rel)}
    status_arr = np.array(status)
    shipped = Settings()
    counts = {s: int(np.sum(status_arr == s)) for s in sorted(set(status))}
    results: dict = {
        "photos": len(paths_rel),
        "embedding_seconds": round(embed_seconds, 1),
        "workers": args.workers,
        "status_counts": counts,
        "shipped_thresholds": {"block": shipped.block_distance, "review": shipped.review_distance},
    }
    print(f"{len(paths_rel)} LFW photos; {embed_seconds:.0f} s to embed ({embed_seconds / len(paths_rel) * 1000:.0f} ms/photo)")
    print("what the pipeline found: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    as_shipped = as_judged = status_arr == "ok"  # the product would judge this face (others: no face, or review)
    averaged = vec + flip
    averaged /= np.linalg.norm(averaged, axis=1, keepdims=True) / np.linalg.norm(vec, axis=1, keepdims=True)

    # ---- 1. verification ------------------------------------------------------------------
    pairs, folds = read_pairs(LFW_ROOT / "pairs.txt")
    missing = [p for p in pairs if p[0] not in row or p[1] not in row]
    same = np.array([p[2] for p in pairs])
    a = np.array([row.get(p[0], -1) for p in pairs])
    b = np.array([row.get(p[1], -1) for p in pairs])
    present = (a >= 0) & (b >= 0)
    verification = {"pairs": len(pairs), "pairs_with_missing_photo": len(missing)}
    print(
        f"\n1. Verification, LFW pairs.txt ({len(pairs)} pairs, {folds} folds; {len(missing)} pairs name a photo not in this copy)"
    )
    for name, vectors, usable in (
        ("plain embedding (no face / gated face = error)", vec, as_shipped),
        ("shipped: mirror-averaged (no face / gated = error)", averaged, as_shipped),
        ("plain, fall-back for photos without a judged face", vec, np.ones(len(vec), bool)),
        ("mirror-averaged, with that fall-back", averaged, np.ones(len(vec), bool)),
    ):
        d = np.full(len(pairs), np.nan)
        ok = present & usable[np.maximum(a, 0)] & usable[np.maximum(b, 0)]
        d[ok] = np.linalg.norm(vectors[a[ok]] - vectors[b[ok]], axis=1)
        mean, std, thresholds = ten_fold(d, same, folds)
        verification[name] = {
            "accuracy_mean": round(mean, 5),
            "accuracy_std": round(std, 5),
            "pairs_without_embedding": int(np.sum(~ok)),
            "fold_thresholds": thresholds,
        }
        print(f"   {name:<52} {mean * 100:6.2f}% ± {std * 100:.2f}  ({int(np.sum(~ok))} pairs without an embedding)")
    results["verification"] = verification

    # ---- 2. watchlist -----------------------------------------------------------------------
    rng = random.Random(args.seed)
    people: dict[str, list[int]] = {}
    for p, i in row.items():
        people.setdefault(p.split("/")[0], []).append(i)
    multi = sorted(n for n, photos in people.items() if len(photos) >= 2)
    enrolled = sorted(rng.sample(multi, min(args.enrolled, len(multi))))
    others = sorted(set(people) - set(enrolled))
    order = {n: rng.sample(people[n], len(people[n])) for n in sorted(people)}  # each person's photos, shuffled
    # Mated probes: photos after the first three of each enrolled person with >= 4 photos, so
    # the probe set is the same whether 1, 2 or 3 photos are enrolled. 1-photo figures also on all.
    mated_same = [(pi, i) for pi, n in enumerate(enrolled) for i in order[n][3 : 3 + args.probes_per_person]]
    mated_all = [(pi, i) for pi, n in enumerate(enrolled) for i in order[n][1 : 1 + args.probes_per_person]]
    nonmated = [order[n][0] for n in others]
    # Cohort for score normalisation: a disjoint set of never-enrolled people (not used as probes).
    cohort_people = set(rng.sample(others, min(1000, len(others) // 3)))
    nonmated_sn = [order[n][0] for n in others if n not in cohort_people]
    cohort_rows = [order[n][0] for n in sorted(cohort_people)]
    split = {
        "seed": args.seed,
        "enrolled_people": len(enrolled),
        "never_enrolled_people": len(others),
        "mated_probes_same_set": len(mated_same),
        "mated_probes_1_photo_all": len(mated_all),
        "nonmated_probes": len(nonmated),
        "probes_per_person_cap": args.probes_per_person,
    }
    results["watchlist_split"] = split
    print(f"\n2. Watchlist: {len(enrolled)} people enrolled (seed {args.seed}), {len(others)} never enrolled")
    print(f"   mated probes: {len(mated_all)} (1 photo, all); {len(mated_same)} (photos 4+, the same set for 1/2/3 photos)")
    print(f"   non-mated probes: {len(nonmated)} (one photo of each person never enrolled)")

    nprng = np.random.default_rng(args.seed)

    def run(
        label: str,
        k: int,
        fusion: str,
        vectors: np.ndarray,
        mated: list,
        nonmated_rows: list,
        cohort: np.ndarray | None = None,
        usable: np.ndarray | None = None,
        people: set[int] | None = None,
    ) -> tuple[dict, np.ndarray, np.ndarray]:
        as_shipped = as_judged if usable is None else usable
        if people is not None:  # a smaller gallery: only these enrolled people, and probes of them
            mated = [(pi, i) for pi, i in mated if pi in people]
        g_rows, g_owner = [], []
        for pi, n in enumerate(enrolled):
            if people is not None and pi not in people:
                continue
            refs = order[n][: min(k, len(order[n]) - 1)]  # always leave at least one photo to probe with
            refs = [r for r in refs if as_shipped[r]]  # the enrollment quality gate: exactly as `enroll`
            g_rows += refs
            g_owner += [pi] * len(refs)
        gallery, owner = vectors[g_rows], np.array(g_owner)
        m_rows = [i for _, i in mated]
        truth = np.array([pi for pi, _ in mated])
        best, dist, second = search(vectors[m_rows], gallery, owner, len(enrolled), fusion, cohort)
        mated_d = np.where((best == truth) & as_shipped[m_rows], dist, np.inf)  # no judged face: missed
        _, nd, n_second = search(vectors[nonmated_rows], gallery, owner, len(enrolled), fusion, cohort)
        nonmated_d = np.where(as_shipped[nonmated_rows], nd, np.inf)  # no face: no alert
        # The product's per-face decision (matching.blocks_alone, the rule of decide_faces for a
        # one-face photo): block when the closest is within block and no other student within review
        # is less than the look-alike margin further (siblings rule), review when anyone is within
        # review, else clear. Mated: a block counts only for the right person.
        t_block, t_review, margin = shipped.block_distance, shipped.review_distance, shipped.lookalike_margin
        m_block = np.isfinite(mated_d) & blocks_alone(mated_d, second, t_block, t_review, margin)
        m_block_without_rule = np.isfinite(mated_d) & (mated_d <= t_block)
        m_wrong = (best != truth) & as_shipped[m_rows] & blocks_alone(dist, second, t_block, t_review, margin)  # as another
        m_review = ~m_block & ~m_wrong & as_shipped[m_rows] & (dist <= t_review)
        n_block = blocks_alone(nonmated_d, n_second, t_block, t_review, margin)
        n_review = ~n_block & (nonmated_d <= t_review)
        product = {
            "mated_blocked": round(float(np.mean(m_block)), 4),
            "mated_blocked_without_siblings_rule": round(float(np.mean(m_block_without_rule)), 4),
            "mated_blocked_as_another_student": round(float(np.mean(m_wrong)), 4),
            "mated_review": round(float(np.mean(m_review)), 4),
            "mated_allowed": round(float(np.mean(~m_block & ~m_wrong & ~m_review)), 4),
            "nonmated_blocked": round(float(np.mean(n_block)), 4),
            "nonmated_review": round(float(np.mean(n_review)), 4),
        }
        figures = {
            "label": label,
            "photos_per_person": k,
            "fusion": fusion,
            "people_with_a_usable_reference": len(set(g_owner)),
            "reference_photos": len(g_rows),
            "mated_probes": len(m_rows),
            "nonmated_probes": len(nonmated_rows),
            "rank1_errors": int(np.sum(best != truth)),
            "at_fpir": [fnir_at_fpir(mated_d, nonmated_d, f, nprng) for f in FPIR_POINTS],
            "at_block": rates_at(mated_d, nonmated_d, shipped.block_distance) if cohort is None else None,
            "at_review": rates_at(mated_d, nonmated_d, shipped.review_distance) if cohort is None else None,
            "product_decisions": product if cohort is None else None,
        }
        seconds[label] = (second, n_second)
        return figures, mated_d, nonmated_d

    configs: list[tuple[str, int, str, np.ndarray, list, list, np.ndarray | None]] = [
        ("1 photo (all probes)", 1, "min", vec, mated_all, nonmated, None),
        ("1 photo", 1, "min", vec, mated_same, nonmated, None),
        ("1 photo, mirror-averaged (shipped)", 1, "min", averaged, mated_same, nonmated, None),
        ("2 photos, min distance", 2, "min", vec, mated_same, nonmated, None),
        ("2 photos, mean embedding", 2, "mean-embedding", vec, mated_same, nonmated, None),
        ("2 photos, min + mean", 2, "min+mean", vec, mated_same, nonmated, None),
        ("2 photos, min + mean, mirror-averaged (shipped)", 2, "min+mean", averaged, mated_same, nonmated, None),
        ("3 photos, min distance", 3, "min", vec, mated_same, nonmated, None),
        ("3 photos, mean embedding", 3, "mean-embedding", vec, mated_same, nonmated, None),
        ("3 photos, min + mean", 3, "min+mean", vec, mated_same, nonmated, None),
        (SHIPPED, 3, "min+mean", averaged, mated_same, nonmated, None),
        ("1 photo, S-norm (LFW adult cohort; not shipped)", 1, "min", vec, mated_same, nonmated_sn, vec[cohort_rows]),
        ("3 photos, min + mean, S-norm (not shipped)", 3, "min+mean", vec, mated_same, nonmated_sn, vec[cohort_rows]),
    ]
    watchlist = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seconds: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # distance to the second-closest person
    print(f"\n   {'configuration':<48} {'FNIR@FPIR 0.1%':>22} {'FNIR@1%':>22} {'FNIR@5%':>22}")
    for label, k, fusion, vectors, mated, nm, cohort in configs:
        figures, md, nd = run(label, k, fusion, vectors, mated, nm, cohort)
        watchlist.append(figures)
        curves[label] = (md, nd)
        cells = [
            f"{f['fnir'] * 100:5.1f}% [{f['fnir_ci95'][0] * 100:4.1f}–{f['fnir_ci95'][1] * 100:4.1f}]" for f in figures["at_fpir"]
        ]
        print(f"   {label:<48} " + " ".join(f"{c:>22}" for c in cells))
    results["watchlist"] = watchlist

    # The check mirrors only faces whose plain embedding comes within review + MIRROR_MARGIN of
    # somebody (pipeline.Guard); the table above mirrors every probe. Same split, both ways:
    from optout_guard.photo import MIRROR_MARGIN

    g_rows, g_owner = [], []
    for pi, n in enumerate(enrolled):
        refs = [r for r in order[n][: min(3, len(order[n]) - 1)] if as_judged[r]]
        g_rows += refs
        g_owner += [pi] * len(refs)
    gallery, owner = averaged[g_rows], np.array(g_owner)
    cut = Settings().review_distance + MIRROR_MARGIN

    def two_stage(rows: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
        best, dist, _ = search(vec[rows], gallery, owner, len(enrolled), "min+mean")
        near = dist <= cut
        if near.any():
            b2, d2, _ = search(averaged[np.array(rows)[near]], gallery, owner, len(enrolled), "min+mean")
            best, dist = best.copy(), dist.copy()
            best[near], dist[near] = b2, d2
        return best, dist, float(np.mean(near))

    m_rows = [i for _, i in mated_same]
    best, dist, m_near = two_stage(m_rows)
    md2 = np.where((best == np.array([pi for pi, _ in mated_same])) & as_judged[m_rows], dist, np.inf)
    _, nd2, n_near = two_stage(nonmated)
    nd2 = np.where(as_judged[nonmated], nd2, np.inf)
    staged = [fnir_at_fpir(md2, nd2, f, nprng, boots=100) for f in FPIR_POINTS]
    results["two_stage_mirroring"] = {
        "at_fpir": staged,
        "mirrored_mated": round(m_near, 3),
        "mirrored_nonmated": round(n_near, 3),
    }
    print(
        f"   {'3 photos, shipped, mirrored only when near':<48} "
        + " ".join(f"{f['fnir'] * 100:5.1f}%{'':>16}" for f in staged)
        + f"  (mirrored: {m_near:.0%} of mated, {n_near:.0%} of non-mated probes)"
    )

    print(f"\n   at the shipped thresholds (block {shipped.block_distance}, review {shipped.review_distance}), 95% Wilson CI:")
    for figures in watchlist:
        if figures["at_block"] is None:
            continue
        at_b, at_r = figures["at_block"], figures["at_review"]
        print(
            f"   {figures['label']:<48} block: FNIR {at_b['fnir'] * 100:5.1f}% FPIR {at_b['fpir'] * 100:5.2f}% "
            f"[{at_b['fpir_ci95'][0] * 100:.2f}–{at_b['fpir_ci95'][1] * 100:.2f}]   "
            f"review: FNIR {at_r['fnir'] * 100:5.1f}% FPIR {at_r['fpir'] * 100:5.2f}%"
        )

    if args.baseline:
        p_status, p_vec, _p_flip, p_seconds = load_embeddings(
            [str(lfw / p) for p in paths_rel], args.workers, args.out / "lfw_embeddings_plain.npz", embed_photo_plain
        )
        p_ok = np.array(p_status) == "ok"
        d = np.full(len(pairs), np.nan)
        ok = present & p_ok[np.maximum(a, 0)] & p_ok[np.maximum(b, 0)]
        d[ok] = np.linalg.norm(p_vec[a[ok]] - p_vec[b[ok]], axis=1)
        mean, std, _ = ten_fold(d, same, folds)
        baseline = {
            "photos_without_a_face": int(np.sum(~p_ok)),
            "seconds": round(p_seconds, 1),
            "verification_no_face_is_error": round(mean, 5),
            "verification_std": round(std, 5),
            "pairs_without_embedding": int(np.sum(~ok)),
            "watchlist": [],
        }
        print(f"\n   baseline, plain dlib (HOG upsample 1, nearest-centre face): {int(np.sum(~p_ok))} photos without a face")
        print(
            f"   verification {mean * 100:.2f}% ± {std * 100:.2f} ({int(np.sum(~ok))} pairs without an embedding, counted as errors)"
        )
        for label, k, fusion in (("baseline: 1 photo", 1, "min"), ("baseline: 3 photos, min distance", 3, "min")):
            figures, _md, _nd = run(label, k, fusion, p_vec, mated_same, nonmated, None, p_ok)
            baseline["watchlist"].append(figures)
            cells = [
                f"{f['fnir'] * 100:5.1f}% [{f['fnir_ci95'][0] * 100:4.1f}–{f['fnir_ci95'][1] * 100:4.1f}]"
                for f in figures["at_fpir"]
            ]
            print(f"   {label:<48} " + " ".join(f"{c:>22}" for c in cells))
        results["baseline_plain_dlib"] = baseline

    print("\n   what a one-face photo gets from the product's rule (siblings rule included):")
    for figures in watchlist:
        d = figures["product_decisions"]
        if d is None:
            continue
        print(
            f"   {figures['label']:<48} enrolled: block {d['mated_blocked'] * 100:5.1f}% (without siblings rule "
            f"{d['mated_blocked_without_siblings_rule'] * 100:5.1f}%), review {d['mated_review'] * 100:5.1f}%, "
            f"allow {d['mated_allowed'] * 100:5.1f}%; never enrolled: block {d['nonmated_blocked'] * 100:5.2f}%, "
            f"review {d['nonmated_review'] * 100:5.1f}%"
        )

    # ---- 3. the rule ------------------------------------------------------------------------
    # Review: the smallest distance at which at most 2% of photos of enrolled people are missed.
    # Block: the largest distance (0.01 steps) at which, with that review distance and the
    # siblings rule with its look-alike margin (matching.blocks_alone), at most 0.1% of
    # never-enrolled faces are blocked.
    md, nd = curves[SHIPPED]
    m2, n2 = seconds[SHIPPED]
    margin = shipped.lookalike_margin
    block_at, review_at = rule_thresholds(md, nd, n2, margin=margin)  # the same function as optout-guard calibrate
    review_t = review_at if review_at is not None else shipped.review_distance
    block_t = block_at if block_at is not None else 0.0
    mb = np.isfinite(md) & blocks_alone(md, m2, block_t, review_t, margin)
    nb = blocks_alone(nd, n2, block_t, review_t, margin)
    rule = {
        "rule": f"review down to FNIR <= {REVIEW_FNIR:.0%}; block where the product's rule falsely blocks <= {BLOCK_FPIR:.1%} "
        f"of never-enrolled faces ({SHIPPED}, {len(enrolled)} enrolled)",
        "block": block_t,
        "review": review_t,
        "at_rule_block": rates_at(md, nd, block_t),
        "at_rule_review": rates_at(md, nd, review_t),
        "product_at_rule": {
            "enrolled_blocked": round(float(np.mean(mb)), 4),
            "enrolled_missed": round(float(np.mean(md > review_t)), 4),
            "never_enrolled_blocked": round(float(np.mean(nb)), 4),
            "never_enrolled_held_for_review": round(float(np.mean((nd <= review_t) & ~nb)), 4),
        },
    }
    print(f"\n3. Rule: {rule['rule']}: block <= {block_t}, review <= {review_t}")
    p = rule["product_at_rule"]
    print(
        f"   photos of enrolled people: {p['enrolled_blocked'] * 100:.1f}% blocked, {p['enrolled_missed'] * 100:.1f}% missed, "
        f"the rest review; faces of others: {p['never_enrolled_blocked'] * 100:.2f}% blocked, "
        f"{p['never_enrolled_held_for_review'] * 100:.1f}% held for review"
    )
    # The same thresholds with fewer students enrolled (a district's list is often shorter).
    sizes = []
    for size in (100, 300, 1000):
        people = set(random.Random(args.seed + size).sample(range(len(enrolled)), min(size, len(enrolled))))
        label = f"3 photos, {size} enrolled"
        figures, smd, snd = run(label, 3, "min+mean", averaged, mated_same, nonmated, people=people)
        sm2, sn2 = seconds[label]
        blocked = np.isfinite(smd) & blocks_alone(smd, sm2, block_t, review_t, margin)
        false_block = blocks_alone(snd, sn2, block_t, review_t, margin)
        row = {
            "enrolled": size,
            "mated_probes": figures["mated_probes"],
            "enrolled_blocked": round(float(np.mean(blocked)), 4),
            "enrolled_missed": round(float(np.mean(smd > review_t)), 4),
            "never_enrolled_blocked": round(float(np.mean(false_block)), 4),
            "never_enrolled_held_for_review": round(float(np.mean((snd <= review_t) & ~false_block)), 4),
        }
        sizes.append(row)
        print(
            f"   {size:5d} enrolled: photos of enrolled people {row['enrolled_blocked'] * 100:5.1f}% blocked, "
            f"{row['enrolled_missed'] * 100:4.1f}% missed; faces of others {row['never_enrolled_blocked'] * 100:5.2f}% blocked, "
            f"{row['never_enrolled_held_for_review'] * 100:5.1f}% held for review"
        )
    rule["by_gallery_size"] = sizes
    results["rule"] = rule
    results["total_seconds"] = round(time.perf_counter() - total_started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(results, indent=1))
    det_plot(curves, args.out / "det.png", shipped)
    print(f"\nfigures: {args.out / 'accuracy.json'}\nDET plot: {args.out / 'det.png'}\ntotal {results['total_seconds']:.0f} s")


def det_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, shipped: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        "1 photo",
        "3 photos, min distance",
        "1 photo, mirror-averaged (shipped)",
        "2 photos, min + mean, mirror-averaged (shipped)",
        SHIPPED,
    ]
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=110)
    grid = np.linspace(0.2, 0.8, 601)
    for label in shown:
        md, nd = curves[label]
        fpir = np.array([np.mean(nd <= t) for t in grid])
        fnir = np.array([fnir_at(md, t) for t in grid])
        keep = (fpir > 0) & (fnir > 0)
        (line,) = ax.plot(fpir[keep], fnir[keep], label=label)
        for t, marker in ((shipped.block_distance, "o"), (shipped.review_distance, "s")):
            ax.plot([np.mean(nd <= t)], [fnir_at(md, t)], marker, color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(5e-3, 1)
    ax.set_xlabel("FPIR: faces of people never enrolled that are alerted")
    ax.set_ylabel("FNIR: photos of enrolled people missed")
    ax.set_title(f"LFW watchlist, optout-guard pipeline (o block {shipped.block_distance}, ■ review {shipped.review_distance})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
