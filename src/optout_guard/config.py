"""Settings: defaults < workspace ``config.toml`` < ``OPTOUT_GUARD_*`` environment < command-line flags.

Every threshold is a named setting with a documented default (see docs/settings.md).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optout_guard.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "config.toml"
STATE_DIR = ".optout-guard"  # private (0700) folder in the workspace that holds the index
ENV_PREFIX = "OPTOUT_GUARD_"
DETECTORS = ("centerface", "hog")


# ---- groups: what each stage reads (views of the flat settings above; config.toml stays flat) ----
@dataclass(frozen=True)
class Thresholds:
    """What matching reads: distances that block and hold, the look-alike margin, re-opening."""

    block: float
    review: float
    lookalike_margin: float
    reopen: float


@dataclass(frozen=True)
class Settings:
    # Distances between embeddings (smaller = closer), set by the rule in docs/accuracy.md "Thresholds" from
    # scripts/benchmark_accuracy.py (LFW, 1,000 people enrolled from 3 photos): review down to where
    # 2% of photos of enrolled people are missed; block where 0.1% of other faces are blocked. Not
    # the folklore 0.6, at which most faces come within reach of somebody in a large gallery.
    block_distance: float = 0.40
    review_distance: float = 0.50
    # A face within the block distance of one student still blocks when another student is also
    # within the review distance, if that other student is at least this much further (docs/accuracy.md
    # "Look-alikes"); closer than that, the face is review naming both. 1.5 = never (the old rule).
    lookalike_margin: float = 0.15
    # A face a reviewer cleared ("none of them") opens again when a student they were not shown comes
    # this close (a student enrolled since); review_distance when that is larger.
    reopen_distance: float = 0.6
    # Use the district's cohort (picture-day photos of students who did NOT opt out, embedded in
    # memory at sync/enroll and discarded): hub penalties and thresholds per number of reference
    # photos, stored in the index as numbers only (docs/accuracy.md "The cohort"). false = never embed a cohort and
    # ignore what an index holds from one.
    cohort: bool = True
    # Share of other children a cohort calibration lets come within the review distance of some
    # enrolled student (the review load it aims at, per face).
    cohort_review_share: float = 0.10
    # The cohort narrows review (and pushes hub students away) only as far as it costs at most this
    # share of children caught a year after their picture day (docs/accuracy.md "Children": measured
    # on the district's own children with sync --previous-photos, else on children_dev's curve).
    max_catch_loss: float = 0.02
    # Consenting students (docs/accuracy.md "Consenting students", docs/privacy.md): where families
    # consented in writing, keep templates of their children and clear a face that was held only
    # because it resembles an opted-out child, when it is recognised as a consenting child and every
    # opted-out child is at least consent_margin further. Off: nothing about them is stored (an index
    # holding some is purged at the next change of the gallery, or now with `optout-guard include purge`).
    consent_matching: bool = False
    consent_margin: float = 0.09
    # Faces whose box is narrower than this (original pixels) are "too small to check": review.
    min_face_px: int = 40
    # District policy, off (0) by default: faces narrower than this many pixels (original photo) are
    # treated as identifying nobody and are *clear*, not review. docs/how-it-works.md "Small and blurred faces" gives the
    # measured share of such faces dlib still recognises at each size: read it before turning it on.
    unidentifiable_below_px: int = 0
    # Faces this small are still searched for, so that they can be flagged (never silently dropped).
    detect_min_face_px: int = 32
    detector: str = "centerface"
    detection_threshold: float = 0.4
    # Aligned-face sharpness (variance of the Laplacian on the 150 px chip) below which a face is
    # "too blurred to check": review.
    min_sharpness: float = 8.0
    # Refuse to decode anything larger than this (decompression bombs); larger JPEGs are decoded at
    # a reduced scale so that at most max_working_pixels are held in memory.
    max_image_pixels: int = 250_000_000
    max_working_pixels: int = 40_000_000
    max_pages: int = 50
    # Processes for checking folders; 0 = one per CPU core. Small batches always use one.
    workers: int = 0
    # Threads listing the audit's library, one top-level folder each (a network share answers every
    # directory read after a round trip; measured in scripts/benchmark_coordinator.py).
    listing_threads: int = 4
    # False = detection-only mode: no face templates at all, every face found is flagged for a
    # person (and blurred in --redact copies). For states that restrict facial recognition.
    recognition: bool = True
    # When a face is found lying on its side or upside down, look again with the photo turned
    # (photos stored on their side whose EXIF rotation was stripped): three more detections, only then.
    try_rotations: bool = True
    # A face lying on its side or upside down among upright ones: turn its own region upright and
    # judge it (measured in docs/how-it-works.md "Turned faces"); false = such faces are review, as before.
    judge_turned_faces: bool = True
    # A face cut by the photo's edge is review, never cleared (measured: half faces of enrolled
    # people are cleared 12–43% of the time); false = judged as they are (docs/how-it-works.md "Faces cut by the edge").
    hold_faces_cut_by_edge: bool = True
    # Clips: frames examined per second (plus the first frame after every scene cut), and how much of
    # a clip is checked (a longer clip is checked up to this and is review: "only the first N min").
    clip_frames_per_second: float = 3.0
    max_clip_seconds: int = 600
    # Where the review desk answers (optout-guard serve): the audit report links each group of photos
    # to review to the desk's queue filtered to its folder. Set it to the address staff open with --lan.
    desk_address: str = "http://127.0.0.1:8765/"
    workspace: Path = Path(".")
    enrollments_dir: Path | None = None
    index_path: Path | None = None
    # Encrypt the index at rest with the base64 256-bit key in this file (kept away from the
    # index); OPTOUT_GUARD_INDEX_KEY, if set, takes its place.
    index_key_file: Path | None = None

    @property
    def enrollments(self) -> Path:
        return self.enrollments_dir or self.workspace / "enrollments"

    def worker_count(self, photos: int) -> int:
        """Processes to use for ``photos`` photos: starting a worker costs about a second (it loads
        the models), so batches under 8 photos run in this process."""
        if photos < 8:
            return 1
        return max(1, min(self.processes, photos))

    @property
    def processes(self) -> int:
        """Worker processes for large jobs: the setting, or one per CPU core."""
        return self.workers or (os.cpu_count() or 1)

    @property
    def index_file(self) -> Path:
        return self.index_path or self.workspace / STATE_DIR / "index.npz"

    @property
    def thresholds(self) -> Thresholds:
        reopen = max(self.reopen_distance, self.review_distance)  # never reopen less than review would hold
        return Thresholds(self.block_distance, self.review_distance, self.lookalike_margin, reopen)

    @property
    def state_dir(self) -> Path:
        """The private folder (0700) of the index and everything kept beside it: the review book,
        the audit states, the activity log and its key, desk accounts, the enrollment marker."""
        return self.index_file.parent

    def validate(self) -> Settings:
        """Every number within a range where the checker still checks: a setting that would switch
        detection or matching off (detection_threshold 4, say) is refused, never obeyed."""
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(
                    f"setting {name} = {value} is out of range: it must be between {low} and {high} "
                    "(fix config.toml, the OPTOUT_GUARD_* variables or the option)"
                )
        if not 0 < self.block_distance <= self.review_distance:
            raise ConfigError(
                f"block_distance ({self.block_distance}) must be > 0 and <= review_distance "
                f"({self.review_distance}); fix config.toml or the OPTOUT_GUARD_* variables"
            )
        if self.detector not in DETECTORS:
            raise ConfigError(f"detector must be one of {', '.join(DETECTORS)}, not {self.detector!r}")
        if self.detect_min_face_px > self.min_face_px:
            raise ConfigError(
                f"detect_min_face_px ({self.detect_min_face_px}) must not be larger than min_face_px ({self.min_face_px}): "
                "faces too small to check must still be found, to be flagged"
            )
        if self.unidentifiable_below_px > self.min_face_px:
            raise ConfigError(
                f"unidentifiable_below_px ({self.unidentifiable_below_px}) must not be larger than min_face_px "
                f"({self.min_face_px}): faces in between would be neither checked nor held"
            )
        if not self.desk_address.startswith(("http://", "https://")):
            raise ConfigError(f"desk_address must be a web address (http://… or https://…), not {self.desk_address!r}")
        if self.max_image_pixels < self.max_working_pixels:
            raise ConfigError("max_image_pixels must be >= max_working_pixels")
        return self


# Allowed ranges of the numeric settings (inclusive). Distances: dlib's embeddings are ~unit length,
# so 1.5 is already "everybody"; detection_threshold above 0.7 loses real faces (CenterFace scores
# many true faces 0.5–0.8) and would allow photos of students without a word.
RANGES: dict[str, tuple[float, float]] = {
    "block_distance": (0.05, 1.5),
    "listing_threads": (1, 64),
    "review_distance": (0.05, 1.5),
    "lookalike_margin": (0.0, 1.5),
    "reopen_distance": (0.05, 1.5),
    "cohort_review_share": (0.01, 0.5),
    "max_catch_loss": (0.0, 0.5),
    "consent_margin": (0.0, 0.5),
    "min_face_px": (8, 400),
    "detect_min_face_px": (8, 400),
    "unidentifiable_below_px": (0, 40),
    "detection_threshold": (0.05, 0.7),
    "min_sharpness": (0.0, 200.0),
    "max_image_pixels": (1_000_000, 2_000_000_000),
    "max_working_pixels": (1_000_000, 400_000_000),
    "max_pages": (1, 1000),
    "workers": (0, 512),
    "clip_frames_per_second": (1.0, 30.0),
    "max_clip_seconds": (10, 36_000),
}


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a TOML or environment value into the field's type, with an error naming the source."""
    kind = _FIELDS[name].type
    try:
        if "Path" in str(kind):
            return Path(str(value)).expanduser()
        if kind in ("bool", bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError("not true or false")
            return text in ("1", "true", "yes", "on")
        if kind in ("float", float):
            return float(value)
        if kind in ("int", int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: setting {name!r} has a bad value {value!r} ({exc})") from None


def load_settings(
    workspace: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings for a workspace, applying each layer in order of precedence."""
    environ = os.environ if environ is None else environ
    # Absolute once, here: every path derived from it (the desk's served folders, the audit's state
    # key) must not depend on the current directory later.
    ws = Path(workspace or environ.get(ENV_PREFIX + "WORKSPACE") or ".").expanduser().absolute()
    values: dict[str, Any] = {"workspace": ws}

    config_path = ws / CONFIG_FILE
    if config_path.is_file():
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_path}: not valid TOML ({exc}); fix or delete the file") from None
        section = data.get("optout_guard", data)
        for key, value in section.items():
            if key in ("scopes", "sis", "schools") and isinstance(value, dict):
                continue  # named scopes (scope.named_scopes), the SIS export's map (optout_list.sis_map)
            if key not in _FIELDS or key == "workspace":
                raise ConfigError(f"{config_path}: unknown setting {key!r}; see docs/settings.md")
            values[key] = _coerce(key, value, str(config_path))
        # Relative paths in the config file are relative to the workspace, not the current directory.
        for key in ("enrollments_dir", "index_path", "index_key_file"):
            if key in values and not values[key].is_absolute():
                values[key] = ws / values[key]

    for name in _FIELDS:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None and name != "workspace":
            values[name] = _coerce(name, env_value, f"environment variable {ENV_PREFIX + name.upper()}")

    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"option --{name.replace('_', '-')}")

    return Settings(**values).validate()


def settings_stamp(settings: Settings) -> tuple[tuple[int, int] | None, ...]:
    """What identifies the settings a process started with: config.toml's and the key file's size and time."""

    def stamp(path: Path | None) -> tuple[int, int] | None:
        if path is None:
            return None
        try:
            st = Path(path).stat()
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)

    return (stamp(settings.workspace / "config.toml"), stamp(settings.index_key_file))
