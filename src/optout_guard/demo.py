"""A throw-away workspace that shows the whole product on portraits that installed packages ship.

matplotlib ships a portrait of Grace Hopper and scikit-image one of astronaut Eileen Collins (both
public domain). The demo enrolls Grace Hopper from a mirrored, cropped copy of her portrait, then
checks a made-up "group photo" with both women (block), the astronaut alone (allow) and a photo of
a cup of coffee (allow, no faces), through exactly the same enroll and check code as real use.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from optout_guard.config import load_settings
from optout_guard.enroll import EnrollReport, enroll_folder
from optout_guard.errors import ModelUnavailable
from optout_guard.index import FaceIndex, save_index
from optout_guard.models import embedding_fingerprint, get_models
from optout_guard.pipeline import Guard
from optout_guard.types import ScanResult

DEMO_STUDENT = "demo-0001"
# What each demo photo must come back as; the demo fails (exit 3) when it does not.
EXPECTED = {"assembly.jpg": "block", "visitor.jpg": "allow", "coffee.jpg": "allow"}


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the demo needs the {package!r} package for its sample portraits; install optout-guard[demo]")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise ModelUnavailable(f"sample image {path} is missing; reinstall {package}")
    return path


def sample_images() -> dict[str, Path]:
    return {
        "grace_hopper": _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
        "astronaut": _package_file("skimage", "data", "astronaut.png"),
        "coffee": _package_file("skimage", "data", "coffee.png"),
    }


@dataclass
class DemoRun:
    workspace: Path
    annotated: Path
    enroll: EnrollReport
    results: list[ScanResult]

    def unexpected(self) -> list[str]:
        """Photos whose verdict differs from EXPECTED (empty when the demo worked)."""
        return [
            f"{Path(r.path).name}: {r.verdict.value}, expected {EXPECTED[Path(r.path).name]}"
            for r in self.results
            if EXPECTED.get(Path(r.path).name) != r.verdict.value
        ]


def build_workspace(workspace: Path) -> list[Path]:
    """Write the demo's enrollment folder and the photos to check; returns the photos."""
    images = sample_images()
    hopper = Image.open(images["grace_hopper"]).convert("RGB")
    astronaut = Image.open(images["astronaut"]).convert("RGB")

    reference_dir = workspace / "enrollments" / DEMO_STUDENT
    reference_dir.mkdir(parents=True, exist_ok=True)
    # The reference is a mirrored, cropped copy so that the checked photo is not the same pixels.
    w, h = hopper.size
    ImageOps.mirror(hopper).crop((w // 12, 0, w, h - h // 12)).save(reference_dir / "picture-day.jpg", quality=92)

    photos = workspace / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    group = Image.new("RGB", (1600, 900), (196, 206, 214))
    group.paste(hopper.resize((330, 387)), (260, 300))
    group.paste(astronaut.crop((100, 0, 400, 300)).resize((330, 330)), (1000, 330))
    group.save(photos / "assembly.jpg", quality=90)
    astronaut.save(photos / "visitor.jpg", quality=90)
    Image.open(images["coffee"]).convert("RGB").save(photos / "coffee.jpg", quality=90)
    return sorted(photos.iterdir())


def run_demo(workspace: Path | None = None) -> DemoRun:
    workspace = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="optout-guard-demo-"))
    photos = build_workspace(workspace)
    settings = load_settings(workspace, environ={})
    models = get_models()
    index = FaceIndex(embedding_fingerprint())
    guard = Guard(settings, models)
    report = enroll_folder(settings.enrollments, index, settings, guard.face_models)
    save_index(index, settings)
    annotated = workspace / "checked"
    results = [guard.check(photo, annotated) for photo in photos]
    return DemoRun(workspace, annotated, report, results)
