"""Fit the CenterFace -> dlib box mapping used in detection.py, on LFW photos.

dlib's 5-point landmark model was trained on boxes from dlib's own detector, so a CenterFace box is
mapped onto that convention first. This script runs both detectors on the same LFW photos, pairs
boxes by overlap, and prints the median offsets/scales (the constants in detection._CF_TO_DLIB).

    python scripts/fit_box_mapping.py [--n 400]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from optout_guard import detection
from optout_guard.config import Settings
from optout_guard.media.photos import load_image
from optout_guard.models import get_models

LFW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lfw_deepfunneled_color250" / "lfw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    paths = sorted(LFW.glob("*/*.jpg"))
    random.Random(7).shuffle(paths)
    settings = Settings()
    models = get_models()
    saved = detection._CF_TO_DLIB
    detection._CF_TO_DLIB = (0.0, 0.0, 1.0, 1.0)  # raw CenterFace boxes
    rows = []
    for path in paths[: args.n]:
        pixels = load_image(path, settings).pages[0]
        cf, _ = detection._centerface(pixels, settings, models)
        rects = models.hog(pixels, 1)
        for r in rects:
            hx, hy, hw, hh = r.left(), r.top(), r.width(), r.height()
            for x, y, w, h in cf:
                cx, cy = x + w / 2, y + h / 2
                if hx < cx < hx + hw and hy < cy < hy + hh:
                    rows.append(((hx - x) / w, (hy - y) / h, hw / w, hh / h))
    detection._CF_TO_DLIB = saved
    arr = np.array(rows)
    med = np.median(arr, axis=0)
    print(f"pairs: {len(arr)} from {args.n} photos")
    print("median dx, dy, sw, sh = " + ", ".join(f"{v:.3f}" for v in med))
    print("IQR                    = " + ", ".join(f"{v:.3f}" for v in np.subtract(*np.percentile(arr, [75, 25], axis=0))))


if __name__ == "__main__":
    main()
