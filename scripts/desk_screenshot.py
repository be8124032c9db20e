"""The README's picture of the review desk, made only from images that installed packages ship.

Builds the demo workspace (Grace Hopper enrolled as demo-0001, from matplotlib's portrait), adds the
astronaut (scikit-image) as a second student, checks a darker, softer copy of Hopper's portrait with
a strict block distance so that it lands in *review*, starts the desk and photographs the queue
with Debian's Chromium (Playwright). Also prints the page load time.

    .venv/bin/python scripts/desk_screenshot.py [--out docs/review_desk.png]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

from optout_guard.config import load_settings
from optout_guard.demo import build_workspace, sample_images
from optout_guard.desk import Desk, DeskOptions, create_app
from optout_guard.enroll import enroll_folder
from optout_guard.face_models import get_face_models
from optout_guard.index import FaceIndex
from optout_guard.models import embedding_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "review_desk.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    from waitress.server import create_server

    root = Path(tempfile.mkdtemp(prefix="desk-shot-"))
    build_workspace(root)
    samples = sample_images()
    (root / "enrollments" / "demo-0002").mkdir(parents=True)
    shutil.copy(samples["astronaut"], root / "enrollments" / "demo-0002" / "astronaut.png")
    (root / "config.toml").write_text("block_distance = 0.1\nreview_distance = 0.6\n")
    settings = load_settings(root, environ={})
    index = FaceIndex(embedding_fingerprint())
    enroll_folder(settings.enrollments, index, settings, get_face_models())
    index.save(settings.index_file)
    check_folder = root / "Photo check"
    (check_folder / "review").mkdir(parents=True)
    probe = check_folder / "review" / "yearbook-scan.jpg"
    picture = Image.open(samples["grace_hopper"]).convert("RGB")
    picture = ImageEnhance.Brightness(picture.filter(ImageFilter.GaussianBlur(1.2))).enhance(0.8)
    picture.save(probe, quality=80)

    desk = Desk(settings, DeskOptions(port=0, check_folders=[check_folder]))
    desk.book.add_result(desk.guard.check(probe, annotate_dir=desk.marked), "check folder")
    server = create_server(create_app(desk), host="127.0.0.1", port=0)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1180, "height": 620})
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("#card:not([hidden])")
        page.wait_for_load_state("networkidle")
        print(f"queue page with one card loaded in {time.perf_counter() - started:.2f} s")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    server.close()
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
