"""The figure tables of docs/ come from the benchmarks' output files, not from typing.

Each table sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` in a page and is
rendered from ``docs/figures/NAME.json``, a copy of the benchmark's output (``bench-out/`` is not
committed; this copy is, so that the figures and their source travel together).
``tests/test_docs.py`` fails when a table differs from what its JSON gives.

    .venv/bin/python scripts/doc_figures.py           # re-render the tables from docs/figures/
    .venv/bin/python scripts/doc_figures.py --take    # copy bench-out/ outputs to docs/figures/ first
    .venv/bin/python scripts/doc_figures.py --check   # exit 1 when a table is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNAPSHOTS = DOCS / "figures"


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def accuracy_by_gallery(d: dict) -> list[str]:
    rows = ["| students enrolled (3 photos each) | photos of them blocked | reviewed | **missed** | other faces **blocked** "
            "| other faces held for review |", "|---|---|---|---|---|---|"]  # fmt: skip
    for g in d["rule"]["by_gallery_size"]:
        reviewed = 1 - g["enrolled_blocked"] - g["enrolled_missed"]
        rows.append(
            f"| {g['enrolled']:,} | {_pct(g['enrolled_blocked'])} | {_pct(reviewed)} | {_pct(g['enrolled_missed'])} | "
            f"{_pct(g['never_enrolled_blocked'], 2)} | {_pct(g['never_enrolled_held_for_review'])} |"
        )
    return rows


def cluster(d: dict) -> list[str]:
    base = d["local pool, --workers 2"]["photos_per_second"]
    names = {
        "local pool, --workers 2": "local process pool, 2 workers (today)",
        "local pool, --workers 1": "local process pool, 1 worker",
        "Dask LocalCluster, local:2": "Dask `local:2`",
        "Dask LocalCluster, local:1": "Dask `local:1`",
        "real scheduler + 2 workers (127.0.0.1)": "real `optout-guard scheduler` + 2 `worker` processes on 127.0.0.1",
    }
    rows = ["| | photos/s | first result after |", "|---|---|---|"]
    for key, label in names.items():
        r = d[key]
        rate = f"{r['photos_per_second']}"
        if key in ("Dask LocalCluster, local:2", "real scheduler + 2 workers (127.0.0.1)"):
            rate += f" ({(r['photos_per_second'] / base - 1) * 100:+.0f}%)".replace("-", "−")
        rows.append(f"| {label} | {rate} | {r['seconds_to_first_result']} s |")
    one, two = d["Dask LocalCluster, local:1"]["photos_per_second"], d["Dask LocalCluster, local:2"]["photos_per_second"]
    hours = d["hours_for_10M_photos"]
    rows += [
        f"| from 1 to 2 Dask workers | {two / one:.2f}× | |",
        f"| a worker process's peak memory | {d['real_worker_peak_rss_mb']:.0f} MB | |",
        f"| a first audit of 10 million photos at {one} photos/s per core, on 8 / 32 / 128 worker cores | "
        f"{hours['8']} / {hours['32']} / {hours['128']} hours | |",
    ]
    return rows


def coordinator(d: dict) -> list[str]:
    def r100(x: float) -> str:
        return f"{round(x, -2):,.0f}"

    local = d["listing (local disk, warm)"]
    share_key = next(k for k in d if k.startswith("listing (+"))
    share = d[share_key]
    latency = share_key.split("+")[1].split(" ms")[0]
    plans = d["planning"]
    big = max(plans, key=int)
    peaks = sorted({p["peak_rss_mb"] for p in plans.values()})
    return [
        "| | figure |",
        "|---|---|",
        "| listing, local disk: one thread / 4 threads / the walk before | "
        f"{r100(local['list_library, 1 thread']['files_per_second'])} / {r100(local['list_library, 4 threads']['files_per_second'])} / "
        f"{r100(local['before (os.walk + lstat, 1 thread)']['files_per_second'])} files/s |",
        f"| listing, {latency} ms added to every folder read (a share, simulated): 1 / 4 / 8 threads | "
        f"{r100(share['list_library, 1 thread']['files_per_second'])} / {r100(share['list_library, 4 threads']['files_per_second'])} / "
        f"{r100(share['list_library, 8 threads']['files_per_second'])} files/s |",
        f"| plan of {int(big):,} files: first audit / nightly, all unchanged | "
        f"{plans[big]['first_audit_plan_s']} s / {plans[big]['nightly_plan_s']} s |",
        f"| coordinator's peak memory while planning {' or '.join(f'{int(n):,}' for n in sorted(plans, key=int))} files | "
        + (f"{peaks[0]} MB either way |" if len(peaks) == 1 else f"{' / '.join(str(p) for p in peaks)} MB |"),
        "| results committed the way the run records them (~820 bytes of faces each) | "
        f"{r100(d['coordinator_results_per_second'])} /s |",
    ]


def speed(d: dict) -> list[str]:
    b = d["crowd12_breakdown"]
    g, c, f = d["grid12"], d["crowd12"], d["folder100"]
    pg, pc = d["peer_grid12"], d["peer_crowd12"]

    def stages(row: dict) -> str:
        return (f"{row['whole_check']:.2f} s: decode {row['decode']:.2f}, CenterFace {row['centerface']:.2f}, "
                f"landmarks {row['landmarks']:.2f}, quality gate and embedding {row['gate_and_embedding']:.2f}")  # fmt: skip

    return [
        "| | optout-guard | face_recognition's CLI (HOG, shrinks to 1600 px) |",
        "|---|---|---|",
        f"| 12 MP class photo (crowd, {c['faces_found']} faces), one check in a running process, now | {stages(b['now'])} | — |",
        f"| the same, with the runtimes of before (OpenCV DNN, numpy ResNet, Pillow) | {stages(b['before'])} | — |",
        f"| the same photo, whole command (start-up and model loading included) | {c['faces_found']} faces, {c['seconds']:.2f} s "
        f"| {pc['faces_found']} faces, {pc['recognise_seconds']:.2f} s ({pc['recognise_seconds'] / c['seconds']:.1f}× longer) |",
    ] + ([
        f"| the same, side by side: {sbs['runs']} runs each, alternating (median) | {sbs['ours_median']:.2f} s | "
        f"{sbs['peer_median']:.2f} s (**{sbs['ratio_median']:.2f}×** longer; {sbs['ratio_min']:.2f}–{sbs['ratio_max']:.2f}× run by run) |",
    ] if (sbs := d.get("crowd12_side_by_side")) else []) + [
        f"| 4000×3000 grid of dlib's annotated photos ({g['faces_truth']} faces of 37–109 px), whole command | "
        f"{g['faces_found']} found, {g['seconds']:.2f} s: {g['seconds'] / g['faces_found'] * 1000:.0f} ms per face found | "
        f"{pg['faces_found']} found, {pg['recognise_seconds']:.2f} s: {pg['recognise_seconds'] / pg['faces_found'] * 1000:.0f} ms per face found |",
        f"| 100 photos of ~2 MP (crowds and groups): one core / 2 workers | {f['one core']['photos_per_second']:.2f} / "
        f"{f['2 workers, 2 cores']['photos_per_second']:.2f} photos/s | — |",
        f"| 8 photos of 12 MP, 2 workers: peak memory of the largest process | {d['big12_folder']['peak_mb']} MB | — |",
    ] + ([
        f"| one-face photo (250×250), whole command (median of 7) | {st['one_face_command']:.2f} s: interpreter "
        f"{st['interpreter']:.2f}, importing the command line {st['import_cli']:.2f}, the libraries of a check "
        f"{st['import_check_libraries']:.2f}, loading the models {st['load_models']:.2f} (one after another; a check loads "
        f"them in threads while it starts) | — |",
    ] if (st := d.get("startup")) else [])  # fmt: skip


def audit(d: dict) -> list[str]:
    first, again = d["first audit, 2 workers"], d["second audit, nothing changed"]
    recheck = d["after enrolling 5 students, 2 workers"]
    one, two = d["2,000 photos, 1 worker"], d["2,000 photos, 2 workers"]
    small_re, small_full = d["2,000 photos, re-check after enrolling 5"], d["2,000 photos, full audit with the new gallery"]
    cache = d.get("embedding_cache")
    same = "**identical verdicts**" if d["recheck_identical_to_full_audit"] else "**verdicts differ**"
    rows = [
        "| | |",
        "|---|---|",
        f"| first full audit, 2 workers | {first['seconds']:.0f} s ({first['photos'] / first['seconds']:.0f} photos/s); 2,000-photo "
        f"subset: 1 worker {one['seconds']:.0f} s, 2 workers {two['seconds']:.0f} s ({one['seconds'] / two['seconds']:.1f}×) |",
        f"| second audit, nothing changed | {again['seconds']:.1f} s |",
        f"| after enrolling 5 more students (faces re-embedded, no detection) | {recheck['seconds']:.0f} s for all "
        f"{recheck['photos']:,} photos ({first['seconds'] / recheck['seconds']:.1f}× faster than the first audit); 2,000-photo "
        f"subset: {small_re['seconds']:.0f} s vs {small_full['seconds']:.0f} s for a full re-audit "
        f"({small_full['seconds'] / small_re['seconds']:.1f}×), {same} |",
    ]
    if cache:
        rows.append(
            f"| same, with `--embedding-cache` | {cache['recheck_seconds']:.1f} s for all {cache['rechecked']:,} photos re-decided "
            f"({first['seconds'] / cache['recheck_seconds']:.0f}× faster than the full audit); no photo is opened again. The first "
            f"audit with the cache takes longer ({cache['first_audit_seconds']:.0f} s): it mirror-averages every face so that any "
            "later gallery can use them |"
        )
    killed = "verdicts identical to an uninterrupted run" if d["killed_10_times_identical"] else "**verdicts differ**"
    rows.append(f"| killed with SIGKILL at 10 random moments (500 photos), then finished | {killed} |")
    return rows


def video(d: dict) -> list[str]:
    recall, strangers, sp = d["recall"], d["never_enrolled"], d["speed"]
    times = list(dict.fromkeys(k.split(", ")[0] for k in recall))
    sizes = list(dict.fromkeys(k.split(", ")[1] for k in recall))
    rows = ["| enrolled person on screen | " + " | ".join(f"face {z}" if i == 0 else z for i, z in enumerate(sizes)) + " |",
            "|---" * (len(sizes) + 1) + "|"]  # fmt: skip
    for t in times:
        cells = []
        for i, z in enumerate(sizes):
            c = recall[f"{t}, {z}"]
            cells.append(f"blocked {c['blocked']}/{c['tracks']}, caught {c['caught']}/{c['tracks']}" if i == 0 and t == times[0]
                         else f"{c['blocked']}/{c['tracks']}, {c['caught']}/{c['tracks']}")  # fmt: skip
        rows.append(f"| {t} | " + " | ".join(cells) + " |")
    n = sum(c["tracks"] for c in recall.values())
    blocked, caught = sum(c["blocked"] for c in recall.values()), sum(c["caught"] for c in recall.values())
    wrong = sum(c["wrong_student"] for c in recall.values())
    rows += [
        f"| **all {n}** | blocked **{blocked}** ({blocked / n:.0%}), caught **{caught}** ({caught / n:.0%}), "
        f"{wrong} naming the wrong person | | |",
        f"| never-enrolled people | {strangers['people']} in {strangers['clips']} clips → {strangers['tracks']} tracks: "
        f"**{strangers['tracks_blocked']} blocked**, {strangers['tracks_held']} held | | |",
        f"| speed (2 cores): {sp['clip']} | checked in **{sp['check_seconds']:.1f} s, {sp['real_time_factor']:.1f}× faster than "
        f"real time** ({sp['frames_examined']} frames examined); with the contact sheet and the blurred copy "
        f"{sp['check_with_contact_sheet_and_blurred_copy_seconds']:.1f} s; every frame as a photo: about "
        f"{sp['every_frame_as_a_photo_seconds_estimated']:.0f} s | | |",
    ]
    if "handheld_check_seconds" in sp:
        rows.append(f"| the same clip filmed hand-held (the scene, people in it, shifts a few px every frame: the change map follows it) | "
                    f"checked in {sp['handheld_check_seconds']:.1f} s, {sp['handheld_real_time_factor']:.1f}× faster than real "
                    f"time ({sp['handheld_verdict']}) | | |")  # fmt: skip
    if "blurred_copy_verified_at_full_frame_rate" in sp:
        kept = sp["blurred_copy_verified_at_full_frame_rate"]
        rows.append(f"| the blurred copy, read back at its full frame rate where a face that is not clear was | "
                    f"{'kept: no such face found in any frame' if kept else 'not kept: a face was still found'} | | |")  # fmt: skip
    if "copy_vs_deface" in d:
        c = d["copy_vs_deface"]
        beside = (f"; deface on the same clip: {c['deface_seconds']:.1f} s (**{c['deface_over_ours']:.1f}×** ours)"
                  if "deface_seconds" in c else "")  # fmt: skip
        rows.append(f"| the blurred copy as a whole command (`check --redact`, start-up included): {c['clip']} | "
                    f"{c['optout_guard_check_redact_seconds']:.1f} s{beside} | | |")  # fmt: skip
    for seconds, c in d.get("short_appearances", {}).items():
        rows.append(f"| enrolled person on screen {seconds} s, between two samples (face 160 px) | caught {c['caught']}/{c['people']} | | |")
    return rows


def children(d: dict) -> list[str]:
    rows = ["| opted-out children enrolled from | caught | blocked | other children held | other children blocked "
            "| two appearances averaged (0.36 / 0.40): caught / blocked | two photos of another child averaged: held / blocked |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, c in ((k, v) for k, v in d.items() if "opted_out_children_usable" in v):
        rows.append(
            f"| {label} ({c['opted_out_children_usable']} usable children, {c['counts']['appearances']} appearances) | "
            f"{_pct(c['caught'])} | {_pct(c['blocked'])} | {_pct(c['others_held'])} | {_pct(c['others_blocked'], 2)} | "
            f"{_pct(c['pooled_caught'])} / {_pct(c['pooled_blocked'])} ({c['pooled_pairs']} pairs) | "
            f"{_pct(c['other_pairs_held'])} / {_pct(c['other_pairs_blocked'])} ({c['counts']['other_pairs']} pairs) |"
        )
    return rows


def consent(d: dict) -> list[str]:
    rows = ["| families consenting | margin | opted-out caught | blocked | opted-out appearances cleared by a consenting "
            "look-alike | consenting children's faces held | other children's faces held | class photos of 20 held "
            "| faces to review per class photo |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for share, by_margin in d["figures"].items():
        for margin, c in by_margin.items():
            n = c["counts"]
            label = "none (today)" if margin == "none" else margin
            rows.append(
                f"| {share} | {label} | {_pct(c['caught'])} | {_pct(c['blocked'])} | "
                f"{_pct(c['opted_out_cleared_by_consenting'], 2)} ({n['cleared_by_consenting']} of {n['appearances']}) | "
                f"{_pct(c['consenting_faces_held'])} | {_pct(c['other_faces_held'])} | {_pct(c['class_photos_held'])} | "
                f"{c['faces_to_review_per_class_photo']} |"
            )
    return rows


def children_cohort(d: dict) -> list[str]:
    rows = ["| one reference photo; the cohort | review for 1 reference (median) | opted-out children caught | blocked "
            "| other children held |", "|---|---|---|---|---|"]  # fmt: skip
    for label, c in ((k, v) for k, v in d.items() if "review_1_reference_median" in v):
        rows.append(
            f"| {label} | {c['review_1_reference_median']:.3f} | {_pct(c['caught'])} | {_pct(c['blocked'])} | "
            f"{_pct(c['others_held'])} |"
        )
    return rows


# name: (benchmark output it is taken from, page, renderer)
FIGURES: dict[str, tuple[str, str, Callable[[dict], list[str]]]] = {
    "accuracy-by-gallery": ("bench-out/accuracy/accuracy.json", "accuracy.md", accuracy_by_gallery),
    "cluster": ("bench-out/cluster/cluster.json", "cluster.md", cluster),
    "coordinator": ("bench-out/coordinator/coordinator.json", "cluster.md", coordinator),
    "speed": ("bench-out/speed.json", "accuracy.md", speed),
    "audit": ("bench-out/audit/audit.json", "audit.md", audit),
    "video": ("bench-out/video/video.json", "video.md", video),
    "children": ("bench-out/children.json", "accuracy.md", children),
    "children-cohort": ("bench-out/children.json", "accuracy.md", children_cohort),
    "consent": ("bench-out/consent.json", "accuracy.md", consent),
}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"^([ \t]*)<!-- figures:{name} .*?-->\n(.*?)^[ \t]*<!-- /figures:{name} -->", re.S | re.M)


def rendered(name: str, text: str) -> str:
    """``text`` with the table NAME rendered from its snapshot (same indentation as the marker)."""
    _source, _page, render = FIGURES[name]
    data = json.loads((SNAPSHOTS / f"{name}.json").read_text(encoding="utf-8"))
    match = _block(name).search(text)
    if match is None:
        raise SystemExit(f"docs: no <!-- figures:{name} --> block in {FIGURES[name][1]}")
    indent = match.group(1)
    table = "".join(f"{indent}{line}\n" for line in render(data))
    start = match.start(2)
    end = match.end(2)
    return text[:start] + table + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--take", action="store_true", help="copy the benchmarks' outputs from bench-out/ first")
    parser.add_argument("--check", action="store_true", help="only say whether the tables are up to date")
    args = parser.parse_args()
    stale = []
    for name, (source, page, _render) in FIGURES.items():
        if args.take and (ROOT / source).exists():
            SNAPSHOTS.mkdir(exist_ok=True)
            shutil.copyfile(ROOT / source, SNAPSHOTS / f"{name}.json")
            print(f"took {source}")
        path = DOCS / page
        text = path.read_text(encoding="utf-8")
        new = rendered(name, text)
        if new != text:
            stale.append(f"{page}: {name}")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("out of date: " + ", ".join(stale))
        sys.exit(1)
    print("tables re-rendered: " + (", ".join(stale) or "none changed"))


if __name__ == "__main__":
    main()
