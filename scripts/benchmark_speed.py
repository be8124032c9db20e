"""Whole-photo check speed (load → verdict) and memory, and the same photos through face_recognition's CLI.

Photos are made from real ones in ../shared/data (nothing is written into the repository):
  grid12   4000×3000 grid of dlib's 9 annotated group photos at their own size (faces 37–109 px,
           ground-truth boxes known, so "faces found" is exact)
  crowd12  ultralight_crowd_imgs/imgs/11.jpg (26 faces) upscaled to 4000×3000
  photos2  the 24 ultralight crowd photos scaled to ~2 MP
  folder   100 photos (~2 MP, crowd and group photos, each a different crop) checked with 1 and
           with 2 worker processes
  big12    8 photos of 12 MP checked with 2 workers, for peak memory
Each run is the real `optout-guard check` command in a subprocess, so start-up and model loading
are included; peak memory is the largest resident set of that process and its workers.

Then, in one process with the models loaded, where the time of one check of crowd12 goes (decode,
CenterFace, landmarks, quality gate + embedding, search and decision), with the runtimes the product
uses (onnxruntime for CenterFace and the ResNet, libjpeg-turbo decoding JPEGs once) and with the
ones it used before (OpenCV's DNN, the ResNet on numpy, Pillow plus a strict check pass).

With --peer, face_recognition's own CLI is installed into a throw-away venv under bench-out/
(dlib-bin + `pip install --no-deps face_recognition`) and timed on the same grid12 and crowd12
photos: `face_detection` (faces found) and `face_recognition` (detect + encode + compare). Then
crowd12 side by side: our `check` and its `face_recognition`, alternating, 5 runs each (the medians
and the ratio of each pair), so that both are timed in the same minutes of the machine.

    .venv/bin/python scripts/benchmark_speed.py --workspace WS [--peer]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FACES = DATA / "dlib_examples" / "examples" / "faces"
CROWD = DATA / "ultralight_crowd_imgs" / "imgs"
CLI = Path(sys.executable).with_name("optout-guard")


def make_grid(out: Path) -> tuple[Path, list[tuple[int, int, int, int]]]:
    """12 MP grid of the annotated photos, and every ground-truth box in grid coordinates."""
    boxes_by_file = {}
    for xml in ("training.xml", "testing.xml"):
        for image in ET.parse(FACES / xml).getroot().iter("image"):
            boxes_by_file[image.get("file")] = [
                (int(b.get("left")), int(b.get("top")), int(b.get("width")), int(b.get("height"))) for b in image.iter("box")
            ]
    grid = Image.new("RGB", (4000, 3000), (120, 120, 120))
    truth = []
    x = y = row_h = 0
    files = sorted(boxes_by_file) * 10
    for name in files:
        tile = Image.open(FACES / name).convert("RGB")
        if x + tile.width > 4000:
            x, y, row_h = 0, y + row_h, 0
        if y + tile.height > 3000:
            break
        grid.paste(tile, (x, y))
        truth += [(x + left, y + top, w, h) for left, top, w, h in boxes_by_file[name]]
        x, row_h = x + tile.width, max(row_h, tile.height)
    path = out / "grid12.jpg"
    grid.save(path, quality=92)
    return path, truth


def scaled(src: Path, size: tuple[int, int], dst: Path, crop: int = 0) -> Path:
    im = Image.open(src).convert("RGB")
    if crop:
        im = im.crop((crop, crop, im.width - crop, im.height - crop))
    im.resize(size, Image.Resampling.LANCZOS).save(dst, quality=90)
    return dst


# Runs a command and reports the largest resident set among it and its workers, for this run only.
_PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "sys.stderr.write('PEAK_KB=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def run_cli(args: list[str], one_core: bool = False) -> tuple[float, int, dict | str]:
    """Wall seconds, peak RSS in MB (the command and its workers), and parsed JSON output."""
    prefix = ["taskset", "-c", "0"] if one_core else []
    started = time.perf_counter()
    done = subprocess.run([*prefix, sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    peak = int(done.stderr.rsplit("PEAK_KB=", 1)[1].split()[0]) // 1024
    try:
        return seconds, peak, json.loads(done.stdout)
    except json.JSONDecodeError:
        return seconds, peak, done.stdout


def ours(workspace: Path, paths: list[Path], workers: int = 1, one_core: bool = False) -> tuple[float, int, dict]:
    args = [str(CLI), "--workspace", str(workspace), "check", "--json", "--workers", str(workers), *map(str, paths)]
    seconds, peak, doc = run_cli(args, one_core)
    assert isinstance(doc, dict), doc
    return seconds, peak, doc


def _command_seconds(argv: list[str], runs: int = 7) -> float:
    """Median wall seconds of a whole command (a fresh process each time)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=600)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


_STAGES = """
import sys, time
t0 = time.perf_counter()
from optout_guard.cli import app  # noqa: F401
t1 = time.perf_counter()
import numpy, cv2, PIL.Image  # noqa: F401,E401
from optout_guard.pipeline import Guard  # noqa: F401
t2 = time.perf_counter()
from optout_guard.models import get_models
get_models().preload(["centerface", "landmarks", "resnet"])
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def startup(workspace: Path, photo: Path) -> dict[str, float]:
    """A one-face photo checked as a whole command (median of 7), and where a start goes: the
    interpreter, importing the command line, the libraries of a check, loading the models (each
    measured in a fresh process, models from the graph cache as after the first run). The package's
    bytecode is compiled first, as scripts/setup-env and any wheel install do (PYTHONDONTWRITEBYTECODE,
    set on some machines, would otherwise make every run compile it again)."""
    import compileall

    compileall.compile_dir(str(Path(__import__("optout_guard").__file__).parent), quiet=1)
    _command_seconds([str(CLI), "--workspace", str(workspace), "check", str(photo)], runs=1)  # the graph cache
    figures = {
        "interpreter": _command_seconds([sys.executable, "-c", "pass"]),
        "help_command": _command_seconds([str(CLI), "--help"]),
        "one_face_command": _command_seconds([str(CLI), "--workspace", str(workspace), "check", str(photo)]),
    }
    stages = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", _STAGES], capture_output=True, text=True, check=True).stdout
        stages.append([float(x) for x in out.split()])
    stages.sort(key=sum)
    figures["import_cli"], figures["import_check_libraries"], figures["load_models"] = stages[len(stages) // 2]
    return figures


def found_in_grid(doc: dict, truth) -> int:
    faces = [f["box"] for p in doc["photos"] for f in p["faces"]]

    def hit(t):
        x, y, w, h = t
        return any(x <= fx + fw / 2 <= x + w and y <= fy + fh / 2 <= y + h for fx, fy, fw, fh in faces)

    return sum(hit(t) for t in truth)


def _median_seconds(fn, runs: int = 7) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2], out


def breakdown(workspace: Path, photo: Path) -> dict[str, dict[str, float]]:
    """Stage times (median of 7) of one check of ``photo``, now and with the runtimes of before."""
    import cv2

    from optout_guard import detection
    from optout_guard.config import load_settings
    from optout_guard.embedding import embed_faces
    from optout_guard.media.photos import load_image
    from optout_guard.models import CENTERFACE_FILE, EMBEDDER_FILE, Models, model_path
    from optout_guard.pipeline import Guard, NoDecisions
    from optout_guard.resnet import DlibResNet

    settings = load_settings(workspace, environ={})

    class OpenCVCenterFace:  # what models.centerface was: OpenCV 5's DNN on the same file
        def __init__(self) -> None:
            self.net = cv2.dnn.readNetFromONNX(str(model_path(CENTERFACE_FILE)))

        def __call__(self, blob):
            self.net.setInput(blob)
            return self.net.forward(["537", "538", "539", "540"])

    import optout_guard.media.photos as photos

    strict_jpeg = photos._strict_jpeg

    def check_only(name: str, data: bytes, max_pixels: int) -> None:  # what load_image did: check, then Pillow
        strict_jpeg(name, data, 0)

    def stages(label: str, models: Models) -> dict[str, float]:
        photos._strict_jpeg = strict_jpeg if label == "now" else check_only  # type: ignore[assignment]
        try:
            guard = Guard(settings, models=models, settler=NoDecisions())
            guard.check(photo)  # warm: models loaded, first-run allocations done
            decode, image = _median_seconds(lambda: load_image(photo, settings))
            boxes, _ = detection._centerface(image.pages[0], settings, models)
            centerface, _ = _median_seconds(lambda: detection._centerface(image.pages[0], settings, models))
            landmarks, _ = _median_seconds(lambda: [detection._landmarks(image.pages[0], b, models) for b in boxes])
            faces = detection.detect_faces(image, settings, models)
            embed, _ = _median_seconds(lambda: embed_faces(image, faces, settings, guard.face_models, mirror=False))
            whole, result = _median_seconds(lambda: guard.check(photo))
        finally:
            photos._strict_jpeg = strict_jpeg
        return {
            "whole_check": round(whole, 3), "decode": round(decode, 3), "centerface": round(centerface, 3),
            "landmarks": round(landmarks, 3), "gate_and_embedding": round(embed, 3),
            "search_decide_rest": round(whole - decode - centerface - landmarks - embed, 3), "faces": len(result.faces),
        }  # fmt: skip

    out = {
        "now": stages("now", Models({})),
        "before": stages("before", Models({"centerface": OpenCVCenterFace(), "resnet": DlibResNet(model_path(EMBEDDER_FILE))})),
    }
    for label, row in out.items():
        print(
            f"  {label:6} one check {row['whole_check']:.2f} s = decode {row['decode']:.3f} + CenterFace {row['centerface']:.3f} "
            f"+ landmarks {row['landmarks']:.3f} + quality gate and embedding {row['gate_and_embedding']:.3f} "
            f"+ search, decision, rest {row['search_decide_rest']:.3f}  ({row['faces']} faces)"
        )
    return out


def peer_venv() -> Path:
    venv = ROOT / "bench-out" / "face_recognition-venv"
    if not (venv / "bin" / "face_detection").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        # face_recognition_models imports pkg_resources, which setuptools 81+ no longer has.
        subprocess.run([*pip, "dlib-bin", "face_recognition_models", "setuptools<81", "click", "pillow", "numpy"], check=True)
        subprocess.run([*pip, "--no-deps", "face_recognition"], check=True)
    return venv


def peer(venv: Path, known: Path, folder: Path) -> dict[str, float]:
    started = time.perf_counter()
    det = subprocess.run([str(venv / "bin" / "face_detection"), str(folder)], capture_output=True, text=True, check=True)
    det_seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([str(venv / "bin" / "face_recognition"), str(known), str(folder)], capture_output=True, text=True, check=True)
    rec_seconds = time.perf_counter() - started
    boxes = []
    for line in det.stdout.splitlines():
        parts = line.rsplit(",", 4)
        if len(parts) == 5:
            top, right, bottom, left = map(int, parts[1:])
            boxes.append([left, top, right - left, bottom - top])
    return {"detect_seconds": det_seconds, "recognise_seconds": rec_seconds, "boxes": boxes}


def side_by_side(workspace: Path, venv: Path, known: Path, photo: Path, runs: int = 5) -> dict[str, object]:
    """The class photo as a whole command, ours and face_recognition's alternating, ``runs`` times:
    the same minutes of the machine for both (its speed moves by ~10% between hours, and a single
    run of each, minutes apart, gave 2.6-3.45x on one day)."""
    ours_s, theirs_s = [], []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(CLI), "--workspace", str(workspace), "check", "--json", str(photo)], capture_output=True, timeout=600)
        ours_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([str(venv / "bin" / "face_recognition"), str(known), str(photo.parent)], capture_output=True,
                       check=True, timeout=600)  # fmt: skip
        theirs_s.append(time.perf_counter() - started)
    ratios = sorted(t / o for o, t in zip(ours_s, theirs_s, strict=True))
    return {"runs": runs, "ours_seconds": ours_s, "peer_seconds": theirs_s, "ours_median": sorted(ours_s)[runs // 2],
            "peer_median": sorted(theirs_s)[runs // 2], "ratio_median": ratios[runs // 2], "ratio_min": ratios[0],
            "ratio_max": ratios[-1]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a workspace with an enrolled index")
    parser.add_argument("--peer", action="store_true", help="also time face_recognition's CLI (installs it in bench-out/)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "speed.json")
    args = parser.parse_args()
    figures: dict[str, object] = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "grid").mkdir()
        grid, truth = make_grid(tmp / "grid")
        (tmp / "crowd12").mkdir()
        crowd12 = scaled(CROWD / "11.jpg", (4000, 3000), tmp / "crowd12" / "crowd12.jpg")

        one_face = tmp / "one_face.jpg"
        scaled(DATA / "lfw_deepfunneled_color250" / "lfw" / "Serena_Williams" / "Serena_Williams_0001.jpg", (250, 250), one_face)
        figures["startup"] = startup(args.workspace, one_face)
        print(
            "one-face photo (250×250) as a whole command: {one_face_command:.2f} s (interpreter {interpreter:.3f} s, "
            "`--help` {help_command:.2f} s; in a fresh process: importing the CLI {import_cli:.3f} s, the libraries of a "
            "check {import_check_libraries:.3f} s, loading the models one after another {load_models:.3f} s)".format(
                **figures["startup"]
            )
        )

        s, peak, doc = ours(args.workspace, [grid])
        found = found_in_grid(doc, truth)
        judged = sum(1 for f in doc["photos"][0]["faces"] if f["candidates"])
        figures["grid12"] = {
            "seconds": s,
            "faces_truth": len(truth),
            "faces_found": found,
            "faces_detected": len(doc["photos"][0]["faces"]),
            "faces_embedded": judged,
            "peak_mb": peak,
        }
        print(
            f"grid12 (4000×3000, {len(truth)} annotated faces 37–109 px): {found}/{len(truth)} found "
            f"({found / len(truth):.1%}), {s:.2f} s for the whole command, {s / max(1, found) * 1000:.0f} ms per face found"
        )

        s, peak, doc = ours(args.workspace, [crowd12])
        n = len(doc["photos"][0]["faces"])
        figures["crowd12"] = {"seconds": s, "faces_found": n, "peak_mb": peak}
        print(f"crowd12 (4000×3000, 26-face crowd photo upscaled): {n} faces, {s:.2f} s for the whole command")
        print("crowd12, one check in a running process (models loaded), where the time goes:")
        figures["crowd12_breakdown"] = breakdown(args.workspace, crowd12)

        two_mp = []
        (tmp / "two").mkdir()
        for p in sorted(CROWD.glob("*.jpg")):
            w, h = Image.open(p).size
            k = (2_000_000 / (w * h)) ** 0.5
            two_mp.append(scaled(p, (round(w * k), round(h * k)), tmp / "two" / p.name))
        s, peak, doc = ours(args.workspace, two_mp)
        per = [p["seconds"] for p in doc["photos"]]
        figures["photos2"] = {
            "photos": len(per),
            "mean_seconds_in_check": sum(per) / len(per),
            "wall_seconds": s,
            "peak_mb": peak,
            "faces": sum(len(p["faces"]) for p in doc["photos"]),
        }
        print(
            f"photos2 ({len(per)} crowd photos at ~2 MP): {sum(per) / len(per):.2f} s per photo inside check, "
            f"{s:.1f} s for the whole command, {figures['photos2']['faces']} faces"
        )

        folder = tmp / "folder"
        folder.mkdir()
        sources = sorted(CROWD.glob("*.jpg")) + sorted(FACES.glob("20*.jpg"))
        for i in range(100):
            src = sources[i % len(sources)]
            w, h = Image.open(src).size
            k = (2_000_000 / (w * h)) ** 0.5
            scaled(src, (round(w * k), round(h * k)), folder / f"{i:03d}.jpg", crop=1 + i // len(sources))
        runs = {}
        for label, workers, one_core in (
            ("one core", 1, True),
            ("1 process, 2 cores", 1, False),
            ("2 workers, 2 cores", 2, False),
        ):
            s, peak, doc = ours(args.workspace, [folder], workers, one_core)
            runs[label] = {"seconds": s, "photos_per_second": 100 / s, "peak_mb": peak}
            print(f"folder of 100 photos (~2 MP), {label}: {s:.1f} s, {100 / s:.2f} photos/s, peak {peak} MB")
        figures["folder100"] = runs
        print(
            f"   2 workers vs one core: {runs['one core']['seconds'] / runs['2 workers, 2 cores']['seconds']:.2f}×; "
            f"vs one process on 2 cores: {runs['1 process, 2 cores']['seconds'] / runs['2 workers, 2 cores']['seconds']:.2f}×"
        )

        big = tmp / "big"
        big.mkdir()
        for i, src in enumerate(sources[:8]):
            scaled(src, (4000, 3000), big / f"{i}.jpg")
        s, peak, doc = ours(args.workspace, [big], 2)
        figures["big12_folder"] = {"photos": 8, "seconds": s, "peak_mb": peak}
        print(f"folder of 8 photos at 12 MP, 2 workers: {s:.1f} s, peak memory {peak} MB (largest process)")

        if args.peer:
            venv = peer_venv()
            known = tmp / "known"
            known.mkdir()
            Image.open(DATA / "face_recognition_examples" / "examples" / "obama.jpg").save(known / "obama.jpg")
            for label, folder_path, ours_s, ours_found in (
                ("grid12", grid.parent, figures["grid12"]["seconds"], figures["grid12"]["faces_found"]),
                ("crowd12", crowd12.parent, figures["crowd12"]["seconds"], figures["crowd12"]["faces_found"]),
            ):
                result = peer(venv, known, folder_path)
                if label == "grid12":
                    peer_found = found_in_grid({"photos": [{"faces": [{"box": b} for b in result["boxes"]]}]}, truth)
                else:
                    peer_found = len(result["boxes"])
                figures[f"peer_{label}"] = {**{k: v for k, v in result.items() if k != "boxes"}, "faces_found": peer_found}
                print(
                    f"face_recognition CLI on {label}: face_detection {result['detect_seconds']:.2f} s finding {peer_found} faces; "
                    f"face_recognition {result['recognise_seconds']:.2f} s.  optout-guard: {ours_s:.2f} s finding {ours_found} → "
                    f"{result['recognise_seconds'] / ours_s:.2f}× faster overall, per face found "
                    f"{(result['recognise_seconds'] / max(1, peer_found)) / (ours_s / max(1, ours_found)):.1f}× less time"
                )
            sbs = figures["crowd12_side_by_side"] = side_by_side(args.workspace, venv, known, crowd12)
            print(
                f"crowd12 side by side ({sbs['runs']} runs each, alternating): optout-guard median {sbs['ours_median']:.2f} s, "
                f"face_recognition median {sbs['peer_median']:.2f} s → {sbs['ratio_median']:.2f}× (runs: "
                f"{sbs['ratio_min']:.2f}–{sbs['ratio_max']:.2f}×)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
