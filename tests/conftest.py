"""Shared fixtures.

Photos come from two places:
- images that installed packages ship (matplotlib's Grace Hopper, scikit-image's astronaut and
  coffee), so that the core tests pass on any fresh machine;
- the public test photos in ``../shared/data`` (never copied into this repo). Tests that need them
  skip when the folder is absent, and fail instead when ``OPTOUT_GUARD_REQUIRE_DATA=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from memo_models import memo_face_models
from optout_guard.config import Settings, load_settings
from optout_guard.demo import DEMO_STUDENT, build_workspace, sample_images
from optout_guard.enroll import enroll_folder
from optout_guard.face_models import get_face_models
from optout_guard.index import FaceIndex, save_index
from optout_guard.models import embedding_fingerprint, get_models
from optout_guard.pipeline import Guard

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One of several test processes (./run-tests): each runs its models on one core, as the
    # product's own worker processes do (pool.py), instead of all of them fighting for every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OPTOUT_GUARD_TEST_DATA", ROOT.parent / "shared" / "data"))
LFW = DATA / "lfw_deepfunneled_color250" / "lfw"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if DATA.is_dir():
        return DATA
    if os.environ.get("OPTOUT_GUARD_REQUIRE_DATA") == "1":
        pytest.fail(f"OPTOUT_GUARD_REQUIRE_DATA=1 but the test photos are not at {DATA}")
    pytest.skip(f"public test photos not present at {DATA}")


@pytest.fixture(scope="session")
def samples() -> dict[str, Path]:
    return sample_images()


@pytest.fixture(scope="session")
def models():
    return get_models()


@pytest.fixture(scope="session")
def face_models():
    """The real detector, aligner and encoder behind the seam (``types.FaceModels``)."""
    return get_face_models()


@pytest.fixture
def memo_models(monkeypatch):
    """The real models behind a memo (``memo_models.py``), also for what the command line enrolls
    and syncs in this process: for tests that embed the same photos again and again."""
    import optout_guard.face_models

    monkeypatch.setattr(optout_guard.face_models, "get_face_models", memo_face_models)
    return memo_face_models()


def make_workspace(root: Path, students: dict[str, list[Path]], environ: dict[str, str] | None = None) -> Settings:
    """A workspace whose enrollments/<id>/ hold copies of the given photos, enrolled and saved.
    ``environ``: settings from these variables too (an OPTOUT_GUARD_INDEX_KEY there: the index is
    saved encrypted)."""
    for student_id, photos in students.items():
        folder = root / "enrollments" / student_id
        folder.mkdir(parents=True, exist_ok=True)
        for photo in photos:
            shutil.copy(photo, folder / photo.name)
    settings = load_settings(root, environ=environ or {})
    index = FaceIndex(embedding_fingerprint())
    enroll_folder(settings.enrollments, index, settings, memo_face_models())  # the same photos in many tests
    save_index(index, settings)
    return settings


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory) -> Settings:
    """The demo's workspace (Grace Hopper enrolled), built from package-shipped portraits."""
    root = tmp_path_factory.mktemp("demo_ws")
    build_workspace(root)
    settings = load_settings(root, environ={})
    index = FaceIndex(embedding_fingerprint())
    report = enroll_folder(settings.enrollments, index, settings, get_face_models())
    assert report.added and not report.not_protected, report
    index.save(settings.index_file)
    return settings


@pytest.fixture(scope="session")
def demo_student() -> str:
    return DEMO_STUDENT


@pytest.fixture(scope="session")
def lfw_ws(tmp_path_factory, data_dir) -> Settings:
    """Hugo Chávez (photos 2–5), Colin Powell (1–3) and Barack Obama enrolled from real photos."""
    root = tmp_path_factory.mktemp("lfw_ws")
    fr = data_dir / "face_recognition_examples" / "examples"
    return make_workspace(
        root,
        {
            "hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)],
            "colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)],
            "obama": [fr / "obama.jpg", fr / "obama2.jpg"],
        },
    )


@pytest.fixture(scope="session")
def lfw_guard(lfw_ws) -> Guard:
    return Guard(lfw_ws)


@pytest.fixture(scope="session")
def chromium_exe() -> str:
    """Debian's Chromium, driven by Playwright (no browser download). Skipped when absent, unless
    OPTOUT_GUARD_REQUIRE_BROWSER=1 (CI)."""
    pytest.importorskip("playwright.sync_api")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("OPTOUT_GUARD_REQUIRE_BROWSER") == "1":
        pytest.fail("OPTOUT_GUARD_REQUIRE_BROWSER=1 but no chromium is installed")
    pytest.skip("no chromium installed (apt-get install chromium)")


@pytest.fixture(scope="session")
def chromium(chromium_exe: str):
    """One headless Chromium for the test process (launching one for each test cost ~1 s); a test
    opens its own context (``chromium.new_context()``: its own cookies and storage) and closes it."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(
        executable_path=chromium_exe, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    )
    yield browser
    browser.close()
    playwright.stop()


# Where browser tests leave their screenshots (gitignored).
TEST_OUTPUT = Path(os.environ.get("OPTOUT_GUARD_TEST_OUTPUT", ROOT / "test-output"))


# ---- the `models` marker: `pytest -m "not models"` runs the logic tests in seconds -------------------
# A test that takes one of these fixtures uses the real models, the public photos or a browser.
REAL_FIXTURES = {"data_dir", "samples", "models", "face_models", "demo_ws", "demo_student", "lfw_ws", "lfw_guard", "chromium_exe",
                 "chromium", "memo_models"}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("data"):
            item.add_marker(pytest.mark.models)


@pytest.fixture(autouse=True)
def _unmarked_tests_load_no_model(request: pytest.FixtureRequest):
    """The marker stays true: in a run of the unmarked tests alone (``-m "not models"``), a test
    that loads a model fails, naming what it loaded (mark it ``models``, or give it the fakes).
    Checked per test, so it holds in each process of a parallel run too."""
    if request.config.getoption("markexpr", "") != "not models":
        yield
        return
    before = set(get_models()._cache)
    yield
    loaded = set(get_models()._cache) - before
    if loaded:
        pytest.fail(f"models loaded by a test not marked `models`: {', '.join(sorted(loaded))}")
