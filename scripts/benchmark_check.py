"""Seconds per photo and faces found for `check`, on a folder and on a 12 MP photo made from a real one.

The 12 MP photos are dlib's annotated group photo 2008_002470.jpg (6 faces, 37–53 px) upscaled 9×
and cropped to 4000×3000, and a 4000×3000 mosaic of the 9 annotated dlib group photos (each kept at its own
size, so faces stay 37–109 px as in a real class photo). Timed through Guard.check (load → verdict),
models already loaded; one process.

    .venv/bin/python scripts/benchmark_check.py --workspace WS [--folder ../shared/data/ultralight_crowd_imgs/imgs]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from optout_guard.config import load_settings
from optout_guard.pipeline import Guard, Skipped

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACES = DATA / "dlib_examples" / "examples" / "faces"


def make_12mp(out: Path) -> list[Path]:
    upscaled = out / "upscaled_12mp.jpg"
    big = Image.open(FACES / "2008_002470.jpg").convert("RGB").resize((4518, 3000), Image.Resampling.LANCZOS)
    big.crop((259, 0, 4259, 3000)).save(upscaled, quality=92)
    mosaic = Image.new("RGB", (4000, 3000), (128, 128, 128))
    photos = sorted(FACES.glob("20*.jpg"))
    x = y = row_h = 0
    for path in photos * 3:
        tile = Image.open(path).convert("RGB")
        if x + tile.width > 4000:
            x, y, row_h = 0, y + row_h, 0
        if y + tile.height > 3000:
            break
        mosaic.paste(tile, (x, y))
        x, row_h = x + tile.width, max(row_h, tile.height)
    mosaic_path = out / "mosaic_12mp.jpg"
    mosaic.save(mosaic_path, quality=92)
    return [upscaled, mosaic_path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a workspace with an enrolled index")
    parser.add_argument("--folder", type=Path, default=DATA / "ultralight_crowd_imgs" / "imgs")
    args = parser.parse_args()
    guard = Guard(load_settings(args.workspace))
    _ = guard.index
    guard.check(FACES / "2008_002470.jpg")  # load the models before timing

    results = [r for r in guard.check_many([args.folder]) if not isinstance(r, Skipped)]
    secs = [r.seconds for r in results]
    faces = sum(len(r.faces) for r in results)
    print(
        f"{args.folder}: {len(results)} photos, {faces} faces found, "
        f"{statistics.mean(secs):.2f} s/photo mean (median {statistics.median(secs):.2f}, max {max(secs):.2f})"
    )

    with tempfile.TemporaryDirectory() as tmp:
        for path in make_12mp(Path(tmp)):
            started = time.perf_counter()
            result = guard.check(path)
            wall = time.perf_counter() - started
            small = sum(1 for m in result.faces if not m.candidates)
            w, h = result.size or (0, 0)
            print(
                f"{path.name}: {w}×{h} ({w * h / 1e6:.1f} MP), {len(result.faces)} faces found "
                f"({small} too small/blurred to judge), {wall:.2f} s, verdict {result.verdict.value}"
            )


if __name__ == "__main__":
    main()
