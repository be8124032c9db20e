"""The enrolled gallery: students' face templates, persisted as one private file.

Format: a NumPy ``.npz`` (no pickles) holding ``embeddings`` (M, 128) float32 and ``meta``, a JSON
document with the format version, the model fingerprint, one record per template (student id,
source photo, its sha256, when it was enrolled) and the photos that were rejected (with reasons)
so that unchanged photos are not re-processed. Written atomically (temp file + rename), mode 0600,
in a 0700 folder. An index made by another model or format version is refused.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from optout_guard.cohort import CohortCalibration
from optout_guard.config import Settings
from optout_guard.errors import ConfigError, IndexUnusable
from optout_guard.fsutil import atomic_write, exclusive, private_dir, remove_stale_temps, utc_now
from optout_guard.matching import mean_templates, pairwise_distances, rank_candidates, student_distances
from optout_guard.types import EMBEDDING_DIM, Candidate, ConsentRecord, Limits, Recognised

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Template:
    """Where one stored embedding came from (never the embedding itself: that lives in the array)."""

    student_id: str
    photo: str  # absolute path of the reference photo when it was enrolled
    sha256: str
    enrolled_at: str  # ISO-8601 UTC
    taken: str = ""  # YYYY-MM-DD the reference photo was taken (file name, EXIF or file date); "" unknown


@dataclass(frozen=True)
class Rejection:
    student_id: str
    photo: str
    sha256: str
    reason: str


class FaceIndex:
    """In-memory gallery. Mutations are local until :meth:`save`."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.templates: list[Template] = []
        self.embeddings = np.zeros((0, EMBEDDING_DIM), np.float32)
        self.rejections: list[Rejection] = []
        self.students: set[str] = set()  # every enrolled student, protected or not
        self._search_cache: tuple[list[str], np.ndarray, np.ndarray] | None = None
        self._cohort: CohortCalibration | None = None
        self._judging_cache: dict[tuple, tuple[np.ndarray, list[Limits | None]]] = {}
        self.generation = 0  # bumped by every save; an older copy put back is refused at load
        # Consenting students (consent.py): their records and templates, a part of their own, never
        # searched with the opted-out students' and used only to clear.
        self.consent: dict[str, ConsentRecord] = {}
        self.consenting_templates: list[Template] = []
        self.consenting_embeddings = np.zeros((0, EMBEDDING_DIM), np.float32)

    @property
    def cohort(self) -> CohortCalibration | None:
        """Numbers from the district's cohort (hub penalties, thresholds per reference count)."""
        return self._cohort

    @cohort.setter
    def cohort(self, value: CohortCalibration | None) -> None:
        self._cohort = value
        self._judging_cache = {}

    # ---- contents -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.templates)

    def student_ids(self) -> list[str]:
        return sorted(self.students)

    def protected_students(self) -> list[str]:
        return sorted({t.student_id for t in self.templates})

    def not_protected(self) -> list[str]:
        """Students with no usable reference photo: the index cannot recognise them."""
        return sorted(self.students - set(self.protected_students()))

    def has_template(self, student_id: str, sha256: str) -> bool:
        return any(t.student_id == student_id and t.sha256 == sha256 for t in self.templates)

    def rejection_for(self, student_id: str, sha256: str) -> Rejection | None:
        return next((r for r in self.rejections if r.student_id == student_id and r.sha256 == sha256), None)

    def newest_reference(self, student_id: str) -> str:
        """The date of the student's most recent reference photo (YYYY-MM-DD), "" if unknown/none."""
        return max((t.taken for t in self.templates if t.student_id == student_id), default="")

    def references(self, student_id: str) -> int:
        """How many reference photos (templates) the student has."""
        return sum(1 for t in self.templates if t.student_id == student_id)

    def limits_for(self, student_id: str, settings: Settings) -> Limits:
        """The thresholds that judge faces near this student: the cohort's for the student's
        number of references when the index has a cohort calibration (and ``cohort`` is on),
        else the settings'."""
        if settings.cohort and self.cohort is not None:
            found = self.cohort.limits(self.references(student_id), student_id)
            if found is not None:
                return found
        return Limits(settings.block_distance, settings.review_distance)

    def penalty_for(self, student_id: str, settings: Settings) -> float | None:
        """The student's hub penalty; None when no cohort covered the student (penalty 0 then)."""
        if not settings.cohort or self.cohort is None:
            return None
        return self.cohort.penalties.get(student_id)

    def gallery_fingerprint(self) -> str:
        """Identity of the gallery's contents (model + every student's templates + the cohort
        numbers that judge them): a verdict given against one gallery is stale once this changes."""
        digest = hashlib.sha256(self.fingerprint.encode())
        for t in sorted(self.templates, key=lambda t: (t.student_id, t.sha256)):
            digest.update(f"{t.student_id}\0{t.sha256}\n".encode())
        if self.cohort is not None:
            digest.update(json.dumps(self.cohort.as_json(), sort_keys=True).encode())
        for t in sorted(self.consenting_templates, key=lambda t: (t.student_id, t.sha256)):
            digest.update(f"consenting\0{t.student_id}\0{t.sha256}\n".encode())  # withdrawn: its clearings are stale
        return digest.hexdigest()[:32]

    # ---- changes --------------------------------------------------------------------------
    def add_student(self, student_id: str) -> None:
        self.students.add(student_id)
        self.withdraw_consent(student_id)  # an opted-out student is never a consenting one

    def add(self, template: Template, embedding: np.ndarray) -> None:
        vector = np.asarray(embedding, np.float32).reshape(1, EMBEDDING_DIM)
        self.students.add(template.student_id)
        self.withdraw_consent(template.student_id)
        self.templates.append(template)
        self.embeddings = np.vstack([self.embeddings, vector])
        self.rejections = [
            r for r in self.rejections if not (r.student_id == template.student_id and r.sha256 == template.sha256)
        ]
        self._search_cache = None
        self._judging_cache = {}

    def reject(self, rejection: Rejection) -> None:
        self.students.add(rejection.student_id)
        self.withdraw_consent(rejection.student_id)
        self.rejections = [
            r for r in self.rejections if not (r.student_id == rejection.student_id and r.sha256 == rejection.sha256)
        ]
        self.rejections.append(rejection)

    def drop_templates(self, keep: list[bool]) -> None:
        self.templates = [t for t, k in zip(self.templates, keep, strict=True) if k]
        self.embeddings = self.embeddings[np.asarray(keep, bool)] if len(keep) else self.embeddings
        self._search_cache = None
        self._judging_cache = {}

    def remove_student(self, student_id: str) -> int:
        """Forget a student entirely; returns how many templates were deleted."""
        keep = [t.student_id != student_id for t in self.templates]
        removed = keep.count(False)
        self.drop_templates(keep)
        self.rejections = [r for r in self.rejections if r.student_id != student_id]
        self.students.discard(student_id)
        if self.cohort is not None and student_id in self.cohort.penalties:
            # Clean removal: nothing derived from the student's face stays behind.
            penalties = {k: v for k, v in self.cohort.penalties.items() if k != student_id}
            self.cohort = dataclasses.replace(self.cohort, penalties=penalties)
        return removed

    # ---- consenting students (consent.py) -------------------------------------------------
    def record_consent(self, record: ConsentRecord) -> None:
        """Put a student on the Include list (their templates come from deliveries or --photo)."""
        if record.student_id in self.students:
            raise ConfigError(
                f"student {record.student_id} is on the opt-out list: an opted-out student is never recognised "
                "to clear photos. Remove them from the list first if the family changed its mind."
            )
        self.consent[record.student_id] = record

    def add_consenting_template(self, template: Template, embedding: np.ndarray) -> bool:
        """A consenting student's template; False when that photo is already there."""
        if template.student_id not in self.consent:
            raise ConfigError(f"student {template.student_id} has no recorded consent: no template is kept")
        if any(t.student_id == template.student_id and t.sha256 == template.sha256 for t in self.consenting_templates):
            return False
        self.consenting_templates.append(template)
        vector = np.asarray(embedding, np.float32).reshape(1, EMBEDDING_DIM)
        self.consenting_embeddings = np.vstack([self.consenting_embeddings, vector])
        return True

    def withdraw_consent(self, student_id: str) -> int:
        """Take a student off the Include list and delete their templates; how many were deleted."""
        self.consent.pop(student_id, None)
        keep = np.array([t.student_id != student_id for t in self.consenting_templates], bool)
        removed = int((~keep).sum())
        if removed:
            self.consenting_templates = [t for t, k in zip(self.consenting_templates, keep, strict=True) if k]
            self.consenting_embeddings = self.consenting_embeddings[keep]
        return removed

    def purge_consenting(self) -> int:
        """Forget every consenting student (the feature turned off); how many templates were deleted."""
        removed = len(self.consenting_templates)
        self.consent = {}
        self.consenting_templates = []
        self.consenting_embeddings = np.zeros((0, EMBEDDING_DIM), np.float32)
        return removed

    def consenting_references(self, student_id: str) -> int:
        return sum(1 for t in self.consenting_templates if t.student_id == student_id)

    def recognise(self, vectors: np.ndarray, only: frozenset[str] | None = None) -> list[Recognised | None]:
        """Each face's nearest consenting student (per-student distance, as for opted-out students)
        and its nearest opted-out student among those searched (``only``: a scope), raw distances.
        None for a face when there is no consenting template."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, EMBEDDING_DIM)
        usable = [i for i, t in enumerate(self.consenting_templates) if t.student_id not in self.students]
        if not usable or len(vectors) == 0:
            return [None] * len(vectors)
        templates = [self.consenting_templates[i] for i in usable]
        ids = sorted({t.student_id for t in templates})
        number = {s: i for i, s in enumerate(ids)}
        owner = np.array([number[t.student_id] for t in templates], np.int64)
        gallery = self.consenting_embeddings[usable]
        means = mean_templates(gallery, owner, len(ids))
        consenting = student_distances(pairwise_distances(vectors, gallery), owner, pairwise_distances(vectors, means))
        opted_out = np.full(len(vectors), np.inf)
        if len(self.templates):
            raw = self.search(vectors, k=1, only=only)  # no settings: no hub penalty, raw distances
            opted_out = np.array([found[0].distance if found else np.inf for found in raw])
        nearest = consenting.argmin(axis=1)
        return [
            Recognised(ids[j], float(consenting[r, j]), float(opted_out[r])) for r, j in enumerate(nearest)
        ]

    # ---- search ---------------------------------------------------------------------------
    def search(
        self,
        vectors: np.ndarray,
        k: int = 3,
        settings: Settings | None = None,
        only: frozenset[str] | None = None,
    ) -> list[tuple[Candidate, ...]]:
        """The k closest students for each query embedding (see ``matching.student_distances``).
        With ``settings``, distances carry the students' hub penalties and candidates their
        thresholds (cohort, when on); ``only``: the students of a scope (others are not searched)."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, EMBEDDING_DIM)
        if len(self.templates) == 0 or len(vectors) == 0:
            return [() for _ in range(len(vectors))]
        if self._search_cache is None:
            ids = sorted({t.student_id for t in self.templates})
            number = {s: i for i, s in enumerate(ids)}
            owner = np.array([number[t.student_id] for t in self.templates], np.int64)
            self._search_cache = (ids, owner, mean_templates(self.embeddings, owner, len(ids)))
        ids, owner, means = self._search_cache
        per_student = student_distances(pairwise_distances(vectors, self.embeddings), owner, pairwise_distances(vectors, means))
        if only is not None:
            per_student[:, [i for i, s in enumerate(ids) if s not in only]] = np.inf
        penalties, limits = self._judging(ids, settings) if settings is not None else (None, None)
        return rank_candidates(per_student, ids, k, penalties, limits)

    def _judging(self, ids: list[str], settings: Settings) -> tuple[np.ndarray, list[Limits | None]]:
        """Per searched student: hub penalty and thresholds (computed once per gallery and settings)."""
        key = (settings.cohort, settings.block_distance, settings.review_distance)
        cached = self._judging_cache.get(key)
        if cached is None:
            counts: dict[str, int] = {}
            for t in self.templates:
                counts[t.student_id] = counts.get(t.student_id, 0) + 1
            cohort = self.cohort if settings.cohort else None
            penalties = np.array([(cohort.penalties.get(s, 0.0) if cohort is not None else 0.0) for s in ids])
            limits: list[Limits | None] = [(cohort.limits(counts.get(s, 1), s) if cohort is not None else None) for s in ids]
            cached = self._judging_cache[key] = (penalties, limits)
        return cached

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: Path, key: bytes | None = None) -> None:
        """Write atomically: a reader sees the old index or the new one, never half of one. Each save
        gets the next generation number, recorded beside the index too (see :func:`load`)."""
        path = Path(path)
        private_dir(path.parent)
        # A save killed half-way leaves a temp file that may still hold a removed student's templates.
        remove_stale_temps(path.parent, _TMP_PREFIX)
        self.generation = max(self.generation, _recorded_generation(path)) + 1
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.fingerprint,
            "saved_at": now_iso(),
            "generation": self.generation,
            "students": sorted(self.students),
            "templates": [asdict(t) for t in self.templates],
            "rejections": [asdict(r) for r in self.rejections],
            "cohort": self.cohort.as_json() if self.cohort is not None else None,
            "consent": [asdict(c) for c in sorted(self.consent.values(), key=lambda c: c.student_id)],
            "consenting_templates": [asdict(t) for t in self.consenting_templates],
        }
        meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        arrays: dict[str, np.ndarray] = {"embeddings": self.embeddings.astype(np.float32), "meta": meta_bytes}
        if self.consenting_templates:  # absent when there are none: nothing of them in the file at all
            arrays["consenting_embeddings"] = self.consenting_embeddings.astype(np.float32)
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy stubs type allow_pickle as a keyword too
        payload = _encrypt(buffer.getvalue(), key) if key is not None else buffer.getvalue()
        atomic_write(path, payload, prefix=_TMP_PREFIX)
        atomic_write(_generation_file(path), f"{self.generation}\n", prefix=_TMP_PREFIX)

    @classmethod
    def load(cls, path: Path, fingerprint: str, key: bytes | None = None) -> FaceIndex:
        path = Path(path)
        if not path.is_file():
            raise IndexUnusable(
                f"no face index at {path} (workspace {path.parent.parent}). If your workspace is elsewhere, give it "
                "with --workspace DIR (or OPTOUT_GUARD_WORKSPACE); otherwise enroll students first: optout-guard enroll"
            )
        return cls.from_bytes(path.read_bytes(), fingerprint, key, path)

    @classmethod
    def from_bytes(cls, raw: bytes, fingerprint: str, key: bytes | None, path: Path | str) -> FaceIndex:
        """An index from its stored bytes (``path`` names it in messages and for the rollback check;
        a copy received by a cluster worker is checked against nothing on disk)."""
        path = Path(path)
        if raw.startswith(_MAGIC):
            if key is None:
                raise IndexUnusable(
                    f"the face index {path} is encrypted; set OPTOUT_GUARD_INDEX_KEY or index_key_file to its key"
                )
            raw = _decrypt(raw, key, path)
        elif key is not None:
            # Refused rather than read: a plain file where an encrypted one belongs may be a swap.
            raise IndexUnusable(
                f"the face index {path} is not encrypted although a key is configured (replaced?); "
                "if you just turned encryption on, re-create it with: optout-guard enroll --rebuild"
            )
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                embeddings = np.asarray(data["embeddings"], np.float32)
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                consenting = (
                    np.asarray(data["consenting_embeddings"], np.float32)
                    if "consenting_embeddings" in data.files
                    else np.zeros((0, EMBEDDING_DIM), np.float32)
                )
        except Exception as exc:  # noqa: BLE001 - any failure to parse means the file is unusable
            raise IndexUnusable(
                f"the face index {path} is unreadable ({exc}); re-create it with: optout-guard enroll --rebuild"
            ) from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexUnusable(
                f"the face index {path} has format version {meta.get('format_version')}, this optout-guard "
                f"reads version {FORMAT_VERSION}; re-create it with: optout-guard enroll --rebuild"
            )
        if meta.get("model") != fingerprint:
            raise IndexUnusable(
                f"the face index {path} was made with another face model ({meta.get('model')}; installed: "
                f"{fingerprint}); embeddings from different models cannot be compared. Re-create it with: "
                "optout-guard enroll --rebuild"
            )
        templates = [Template(**t) for t in meta["templates"]]
        if embeddings.shape != (len(templates), EMBEDDING_DIM):
            raise IndexUnusable(f"the face index {path} is inconsistent; re-create it with: optout-guard enroll --rebuild")
        generation = int(meta.get("generation", 0))
        recorded = _recorded_generation(path)
        if generation < recorded:
            # An older copy of the index put back (a restored backup, or on purpose): students
            # enrolled since would be allowed. Refused; the operator decides.
            raise IndexUnusable(
                f"the face index {path} is an older copy (generation {generation}; the latest saved was {recorded}): "
                "students enrolled since would not be recognised. Restore the latest index, or, if this copy is "
                f"meant to be used, delete {_generation_file(path)} and run: optout-guard enroll"
            )
        index = cls(fingerprint)
        index.generation = generation
        index.templates = templates
        index.embeddings = embeddings
        index.rejections = [Rejection(**r) for r in meta.get("rejections", [])]
        index.students = set(meta.get("students", [])) | {t.student_id for t in templates}
        if meta.get("cohort"):
            index.cohort = CohortCalibration.from_json(meta["cohort"])
        index.consent = {c["student_id"]: ConsentRecord(**c) for c in meta.get("consent", [])}
        index.consenting_templates = [Template(**t) for t in meta.get("consenting_templates", [])]
        if consenting.shape != (len(index.consenting_templates), EMBEDDING_DIM):
            raise IndexUnusable(f"the face index {path} is inconsistent; re-create it with: optout-guard enroll --rebuild")
        index.consenting_embeddings = consenting
        return index


now_iso = utc_now
_IN_PROGRESS = "enrollment-in-progress"


@contextlib.contextmanager
def enrollment_in_progress(settings: Settings) -> Iterator[None]:
    """A marker for the length of an enroll or sync: if the process is killed, the marker stays and
    ``check`` and ``people`` say that ``enrollments/`` may hold photos the index does not reflect."""
    marker = private_dir(settings.state_dir) / _IN_PROGRESS
    atomic_write(marker, utc_now() + "\n")
    yield
    marker.unlink(missing_ok=True)


def interrupted_enrollment(settings: Settings) -> str | None:
    """A warning when an enroll or sync was stopped before it finished (None when all is well)."""
    marker = settings.state_dir / _IN_PROGRESS
    try:
        started = marker.read_text().strip()
    except OSError:
        return None
    return (
        f"an enroll or sync started {started} did not finish: some students' reference photos may not be "
        "in the index yet, so they may not be recognised. Run: optout-guard enroll"
    )


def sweep_leftovers(settings: Settings, older_than: float = 3600.0) -> int:
    """Delete what an interrupted write left in the workspace: temp copies of reference photos in
    ``enrollments/<id>/`` (a student's photo), of the opt-out list and of pending additions (names),
    and the desk's upload folders of a killed "family opted out today" (photos of a child) older
    than ``older_than`` seconds (a younger one may be in use). Run at the start of every command
    that writes them, and by ``remove``. Returns how many were removed."""
    import shutil
    import time

    removed = 0
    if settings.enrollments.is_dir():
        for folder in (p for p in settings.enrollments.iterdir() if p.is_dir()):
            removed += remove_stale_temps(folder, ".")
    for prefix in (".optout-list-", ".optout-additions-"):
        removed += remove_stale_temps(settings.workspace, prefix)
    if settings.state_dir.is_dir():
        # "tmp*": what a desk of before this version named them.
        for folder in [*settings.state_dir.glob("desk-add-*"), *settings.state_dir.glob("tmp*")]:
            with contextlib.suppress(OSError):
                if folder.is_dir() and time.time() - folder.stat().st_mtime > older_than:
                    shutil.rmtree(folder)
                    removed += 1
    return removed


_TMP_PREFIX = ".index-"


def _generation_file(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".generation")


def _recorded_generation(path: Path) -> int:
    try:
        return int(_generation_file(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


# ---- encryption at rest (optional) ---------------------------------------------------------------
_MAGIC = b"OPTOUT-GUARD-INDEX-AESGCM-1\n"


def _encrypt(data: bytes, key: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return _MAGIC + nonce + AESGCM(key).encrypt(nonce, data, _MAGIC)


def _decrypt(blob: bytes, key: bytes, path: Path) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = blob[len(_MAGIC) : len(_MAGIC) + 12]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(_MAGIC) + 12 :], _MAGIC)
    except (InvalidTag, ValueError):
        raise IndexUnusable(
            f"the face index {path} was tampered with, or the key is wrong: refused. Restore it from a backup "
            "or re-create it with: optout-guard enroll --rebuild"
        ) from None


def new_key() -> str:
    """A new random 256-bit key, base64 (for OPTOUT_GUARD_INDEX_KEY or a key file)."""
    return base64.b64encode(os.urandom(32)).decode()


def index_key(settings: Settings) -> bytes | None:
    """The index key from OPTOUT_GUARD_INDEX_KEY or ``index_key_file``; None when not encrypting."""
    text = os.environ.get("OPTOUT_GUARD_INDEX_KEY")
    source = "OPTOUT_GUARD_INDEX_KEY"
    if not text and settings.index_key_file is not None:
        key_file = Path(settings.index_key_file).resolve()
        if key_file.parent == settings.state_dir.resolve():
            raise ConfigError(f"the key file {key_file} must not be kept beside the index it protects; move it elsewhere")
        try:
            text = key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the index key file {key_file} ({exc.strerror or exc})") from None
        source = str(key_file)
    if not text:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{source} must hold a base64 256-bit key; make one with: optout-guard key new FILE")
    return key


def open_index(settings: Settings, missing_ok: bool = False) -> FaceIndex:
    """The workspace's index, decrypted when a key is configured; with ``missing_ok``, an empty one
    when there is none yet (a first sync's plan)."""
    from optout_guard.models import embedding_fingerprint

    if missing_ok and not settings.index_file.exists():
        return FaceIndex(embedding_fingerprint())
    return FaceIndex.load(settings.index_file, embedding_fingerprint(), index_key(settings))


def save_index(index: FaceIndex, settings: Settings) -> None:
    index.save(settings.index_file, index_key(settings))


@contextlib.contextmanager
def edit_index(settings: Settings, rebuild: bool = False, timeout: float = 60.0) -> Iterator[FaceIndex]:
    """Read-modify-write the workspace's index under one OS lock: the index is read *under* the lock
    (so a change another process saved meanwhile is never lost) and saved when the block ends
    without an error (nothing is saved if it raises). ``rebuild`` starts from an empty index."""
    from optout_guard.models import embedding_fingerprint

    path = settings.index_file
    with exclusive(path.with_name(path.name + ".lock"), f"the face index {path}", timeout):
        remove_stale_temps(path.parent, _TMP_PREFIX)
        sweep_leftovers(settings)  # every command that changes the gallery starts from a clean workspace
        if rebuild or not path.exists():
            index = FaceIndex(embedding_fingerprint())  # its first save still counts on from the old file
        else:
            index = open_index(settings)
        if not settings.consent_matching:
            index.purge_consenting()  # turned off: every change of the gallery deletes what was kept of them
        yield index
        if not settings.consent_matching:
            index.purge_consenting()
        save_index(index, settings)
