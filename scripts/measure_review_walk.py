#!/usr/bin/env python3
"""Keys and seconds to settle a review queue like the walk's (issue 27: 46 cards, 40 of them photo
cards), in a real browser on the review desk: one card at a time with the keyboard (as the walk
did), and with the photo cards answered together (tick every photo shown, one button).

The queue: photo cards from the crowd photos in ../shared/data (ultralight_crowd_imgs: faces too
small or cut by the edge; each photo and a crop of it), and face cards from LFW photos that
resemble the two enrolled students. Every card is answered "none of these" (what the walk's
reviewer did for most of them); a face within the block distance asks for a confirmation, which
counts as a key. The seconds are the desk's and the browser's, not a person's looking time.

    .venv/bin/python scripts/measure_review_walk.py [--out bench-out/review-walk.json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from PIL import Image  # noqa: E402

from conftest import DATA, LFW  # noqa: E402
from optout_guard.config import load_settings  # noqa: E402
from optout_guard.desk import Desk, DeskOptions  # noqa: E402
from optout_guard.review import PHOTO  # noqa: E402
from test_desk import HUGO, Server, desk_page, workspace  # noqa: E402

PHOTO_CARDS = 40


def build_queue(desk: Desk) -> tuple[int, int]:
    crowds = sorted((DATA / "ultralight_crowd_imgs" / "imgs").glob("*.jpg"))
    variants: list[tuple[str, bytes]] = []
    for photo in crowds:
        variants.append((photo.name, photo.read_bytes()))
        with Image.open(photo) as im:  # parts of it: other photos with the same small faces
            w, h = im.size
            for n, box in enumerate(((0, 0, w * 2 // 3, h), (w // 3, 0, w, h), (0, 0, w, h * 2 // 3))):
                buffer = io.BytesIO()
                im.convert("RGB").crop(box).save(buffer, "JPEG", quality=90)
                variants.append((f"crop{n}-{photo.name}", buffer.getvalue()))
    for name, data in variants:
        if sum(1 for c in desk.book.queue(500) if c.face == PHOTO) >= PHOTO_CARDS:
            break
        desk.check_upload(name, data, "walk")
    # Photos that resemble an enrolled student within the review band (default thresholds), each
    # also mirrored: another photo, the same face.
    faces = [HUGO, LFW / "Hugo_Chavez" / "Hugo_Chavez_0040.jpg", LFW / "Colin_Powell" / "Colin_Powell_0024.jpg"]
    for photo in faces:
        desk.check_upload(photo.name, photo.read_bytes(), "walk")
        with Image.open(photo) as im:
            buffer = io.BytesIO()
            im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, "JPEG", quality=92)
        desk.check_upload(f"mirrored-{photo.name}", buffer.getvalue(), "walk")
    cards = desk.book.queue(500)
    return sum(1 for c in cards if c.face == PHOTO), sum(1 for c in cards if c.face != PHOTO)


def walk(server: Server, chromium_exe: str, bulk: bool) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    keys = 0
    with sync_playwright() as p:
        browser, page = desk_page(p, chromium_exe, server)

        def accept(dialog) -> None:  # a Playwright Dialog
            nonlocal keys
            keys += 1
            dialog.accept()

        page.on("dialog", accept)
        page.wait_for_selector("#card:not([hidden])")
        started = time.perf_counter()
        if bulk:
            page.click("#bulk summary")
            page.check("#bulk-all")
            page.click("#bulk-none")
            keys += 3
            page.wait_for_selector("#message:has-text('Settled')")
        while int(page.inner_text("#open-count") or "0") > 0:
            before = int(page.inner_text("#open-count"))
            page.keyboard.press("n")
            keys += 1
            page.wait_for_function(f"Number(document.getElementById('open-count').textContent) < {before}", timeout=60_000)
        seconds = time.perf_counter() - started
        browser.close()
    return {"keys": keys, "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "review-walk.json")
    args = parser.parse_args()
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("needs Chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    out: dict[str, object] = {}
    for label, bulk in (("one card at a time (keyboard)", False), ("photo cards together, face cards one at a time", True)):
        settings = workspace(Path(tempfile.mkdtemp()) / "ws")
        (settings.workspace / "config.toml").unlink()  # the shipped thresholds, not the tests' wide band
        desk = Desk(load_settings(settings.workspace, environ={}), DeskOptions(port=0))
        photos, faces = build_queue(desk)
        server = Server(desk)
        try:
            result = walk(server, chromium, bulk)
        finally:
            server.close()
        out[label] = {"photo_cards": photos, "face_cards": faces, **result}
        print(f"{label}: {photos} photo cards + {faces} face cards: {result['keys']} keys, {result['seconds']} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
