"""Small frozen values that flow between pipeline stages.

Conventions (one per quantity): boxes and landmarks are in pixels of the EXIF-rotated original
image; a *distance* is the Euclidean distance between two 128-d embeddings (smaller = closer).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # numpy only in annotations: `--help`, `people` and `log` start without it
    import numpy as np

    from optout_guard.config import Settings

EMBEDDING_DIM = 128  # dlib's ResNet face descriptor


class Decision(str, enum.Enum):
    """What one face means."""

    BLOCK = "block"  # matches an enrolled student
    REVIEW = "review"  # close to a student, or could not be judged
    CLEAR = "clear"  # clearly not an enrolled student


class ReasonCode(str, enum.Enum):
    """Why a face got its decision, or why a file needs a person. Code decides on these; the text a
    person reads is rendered from them at the edge (so rewording a message changes no verdict)."""

    # faces
    MATCH = "match"  # block: closest to one student, within the block distance
    LOOKALIKE = "lookalike"  # review: close to a student, not close enough to block
    SIBLINGS = "siblings"  # review: two students equally close
    CONTESTED = "contested"  # review: resembles a student another face matched better
    CLEAR = "clear"
    TOO_SMALL = "too_small"
    UNIDENTIFIABLE = "unidentifiable"  # clear by district policy: smaller than unidentifiable_below_px
    TOO_BLURRED = "too_blurred"
    TURNED = "turned"
    CUT_BY_EDGE = "cut_by_edge"
    TOO_COMPRESSED = "too_compressed"
    DETECTION_ONLY = "detection_only"
    REVIEWER_CONFIRMED = "reviewer_confirmed"
    REVIEWER_UNNAMED = "reviewer_unnamed"
    REVIEWER_CLEARED = "reviewer_cleared"
    NOT_JUDGED = "not_judged"  # any other face that could not be judged
    EVENT_MATCH = "event_match"  # block: held alone, matched with the same child in other photos of the check
    OWN_BLUR = "own_blur"  # clear: a face optout-guard itself blurred, in a copy fit to post it wrote
    CONSENTING = "consenting"  # clear: recognised as a student whose family consented (consent.py), was review
    # files
    EMPTY_FILE = "empty_file"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"
    CLIP_DAMAGED = "clip_damaged"  # a clip that could not be (fully) decoded
    CLIP_TOO_LONG = "clip_too_long"  # only the first part of a clip was checked


@dataclass(frozen=True)
class Unjudged:
    """A face that could not be judged: the code, and the sentence for a person."""

    code: ReasonCode
    text: str


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Embeddings for the faces that could be judged, and reasons for those that could not.

    ``vectors[i]`` belongs to ``faces[judged[i]]``; ``unjudged`` maps a face index to its reason.
    """

    vectors: np.ndarray  # (N, 128) float32
    judged: tuple[int, ...]
    unjudged: dict[int, Unjudged]
    chips: tuple[np.ndarray, ...] = ()  # the aligned faces, kept when mirroring was left for later
    mirrored: tuple[bool, ...] = ()  # per vector: already mirror-averaged


class MediaKind(str, enum.Enum):
    """What a file is, decided once (``media.photos.sniff``) and then handed on: each kind that is
    checked has one handler (``media.handlers``)."""

    PHOTO = "photo"  # an image extension or header (every page or frame of it is a photo)
    CLIP = "clip"  # a video container FFmpeg can open with a picture in it
    OTHER = "other"  # read, and neither: left alone (counted as not checked)
    UNREADABLE = "unreadable"  # could not be read, so nobody knows what it is: checked, so it is review

    @property
    def checked(self) -> bool:
        return self is not MediaKind.OTHER


class Verdict(str, enum.Enum):
    """What one photo means."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box: left, top, width, height in original pixels."""

    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0: apart, 1: the same box)."""
        ix = max(0.0, min(self.right, other.right) - max(self.x, other.x))
        iy = max(0.0, min(self.bottom, other.bottom) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def scaled(self, factor: float) -> Box:
        return Box(self.x * factor, self.y * factor, self.w * factor, self.h * factor)

    def as_ints(self) -> tuple[int, int, int, int]:
        return (round(self.x), round(self.y), round(self.w), round(self.h))


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """Decoded pixels of one photo, ready for detection.

    ``pages`` holds one RGB uint8 (H, W, 3) array per frame/page, EXIF-rotated. Very large photos
    are decoded at a reduced scale: ``scale`` is original pixels per working pixel (>= 1.0).
    """

    path: str
    sha256: str
    format: str
    size: tuple[int, int]  # (width, height) of the EXIF-rotated original
    pages: tuple[np.ndarray, ...]
    scale: float = 1.0
    notes: tuple[str, ...] = ()  # things that make the photo need a person (e.g. frames skipped)
    identity: tuple[int, int] | None = None  # (size, mtime_ns) of exactly the bytes decoded
    faces_unjudgeable: str = ""  # why no face in it can be judged (e.g. extreme JPEG compression)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face. ``landmarks`` is (5, 2) float32, dlib's 5-point order, original pixels."""

    box: Box
    score: float
    landmarks: np.ndarray
    page: int = 0  # frame of an animated GIF / page of a multi-page TIFF
    upright: bool = True  # False: the detector saw it lying on its side or upside down
    tilt: float = 0.0  # degrees the face is turned from upright (CenterFace's eye and mouth points)

    @property
    def size(self) -> float:
        """Face size in original pixels: the smaller side of the box."""
        return min(self.box.w, self.box.h)


@dataclass(frozen=True)
class Limits:
    """The distances that judge faces near one student, and where they come from."""

    block: float
    review: float
    source: str = "settings"  # "settings", or e.g. "cohort, 2 references" (docs/accuracy.md "The cohort")


@dataclass(frozen=True)
class Candidate:
    """An enrolled student and how close a face is to them.

    ``distance`` is what is compared with the thresholds: the embedding distance plus the student's
    hub penalty (``penalty``, 0 without a cohort). ``limits`` None: the settings' thresholds."""

    student_id: str
    distance: float
    penalty: float = 0.0
    limits: Limits | None = None


@dataclass(frozen=True, eq=False)
class FaceMatch:
    """The decision for one face, with the closest enrolled students (best first)."""

    face: Face
    decision: Decision
    candidates: tuple[Candidate, ...] = ()
    reason: str = ""
    code: ReasonCode = ReasonCode.NOT_JUDGED
    consenting: str | None = None  # code CONSENTING: the consenting student the face was recognised as

    @property
    def student_id(self) -> str | None:
        return self.candidates[0].student_id if self.candidates else None

    @property
    def distance(self) -> float | None:
        return self.candidates[0].distance if self.candidates else None


@dataclass(frozen=True)
class Track:
    """One face followed through a clip (``ScanResult.faces[i]`` is its decision, in its best frame)."""

    first: float  # seconds: first and last time it was seen
    last: float
    best_time: float  # the frame its box and the contact sheet come from
    seen: int  # sampled frames it was found in
    judged: int  # of which good enough to judge (embedded: the best few)
    # The sightings it was decided from: (seconds, face geometry). Kept by the audit (geometry only)
    # so that a changed opt-out list re-decides the track from those frames, without a full decode.
    best: tuple[tuple[float, Face], ...] = ()
    stream: int = 0  # which of the clip's video streams (position among them): a clip may carry several


@dataclass(frozen=True)
class ClipSummary:
    """What was examined in a clip."""

    duration: float  # seconds (container)
    checked_seconds: float  # how far it was decoded and examined
    frames_examined: int
    sample_every: float
    rotation: int
    has_audio: bool
    tracks: tuple[Track, ...]  # parallel to ScanResult.faces


@dataclass(frozen=True, eq=False)
class ScanResult:
    """Everything known about one checked photo."""

    path: str
    verdict: Verdict
    reasons: tuple[str, ...]
    faces: tuple[FaceMatch, ...] = ()
    sha256: str | None = None
    size: tuple[int, int] | None = None  # (width, height) of the EXIF-rotated original
    pages: int = 1
    seconds: float = 0.0
    annotated_path: str | None = None
    redacted_path: str | None = None  # a copy fit to post: blocked faces made unrecognisable
    notes: tuple[str, ...] = ()  # reasons about the photo itself (frames skipped, stored turned), not its faces
    identity: tuple[int, int] | None = None  # (size, mtime_ns) of the bytes checked; None if none were read
    retry: bool = False  # the verdict comes from an error (a crash, an unreadable file): check it again next time
    problem: ReasonCode | None = None  # what is wrong with the file itself (empty, truncated, unreadable), if anything
    scope: str = ""  # the scope the photo was checked against ("" = the whole district)
    clip: ClipSummary | None = None  # set for video clips: ``faces`` are then one decision per track

    @classmethod
    def fail_closed(cls, path: str, why: str, **fields: Any) -> ScanResult:
        """The one way a file that could not be checked comes back: *review*, with the reason in words
        (never allow). ``fields``: what is known anyway (sha256, identity, retry, problem, seconds…)."""
        return cls(str(path), Verdict.REVIEW, (why,), **fields)

    @property
    def kind(self) -> str:
        return "clip" if self.clip is not None else "photo"

    @property
    def blocked_students(self) -> tuple[str, ...]:
        ids = [m.student_id for m in self.faces if m.decision is Decision.BLOCK and m.student_id]
        return tuple(dict.fromkeys(ids))


class Detector(Protocol):
    """Faces in a decoded photo (``face_models.ModelDetector``: CenterFace and dlib's landmarks)."""

    def detect(self, image: LoadedImage, settings: Settings) -> list[Face]: ...

    def quick_boxes(self, pixels: Any, threshold: float) -> Any:
        """(N, 4) boxes (x, y, w, h) in ``pixels``' pixels from one cheap pass at the picture's own
        size, no landmarks: the clip scout's look at the frames between samples."""
        ...

    def detect_in(self, image: LoadedImage, regions: list[Box], settings: Settings, landmarks: bool = True) -> list[Face] | None:
        """The faces ``detect`` would find within ``regions`` (boxes in the page's pixels) of a
        one-page image, looking at those parts only; None when only a whole look can say (a face
        cut by a region's edge, a detector that cannot look at parts). ``landmarks``: False when
        only the boxes are wanted (blurring): the faces' landmarks are then zeros."""
        ...


class Aligner(Protocol):
    """Faces of one page to aligned chips, one per face (``face_models.DlibAligner``: dlib's 150×150
    chips on the 5 landmarks). ``scale``: original pixels per pixel of ``pixels``."""

    def chips(self, pixels: Any, faces: list[Face], scale: float) -> list[Any]: ...


class Encoder(Protocol):
    """A batch of aligned chips (N, H, W, 3) to (N, 128) embeddings (``face_models.ResNetEncoder``)."""

    def encode(self, chips: Any) -> Any: ...


@dataclass(frozen=True)
class FaceModels:
    """The three models a check uses, behind one seam: the pipeline, clips, enrollment, the sync,
    the cohort, the desk and the cluster take this bundle (``face_models.model_bundle`` for the
    real models; tests pass fakes, ``tests/fakes.py``). The quality gate between aligner and
    encoder is the product's own code (``embedding``), the same with either."""

    detector: Detector
    aligner: Aligner
    encoder: Encoder


class Settler(Protocol):
    """What people decided about photos, applied to a check's results (``review.WorkspaceDecisions``
    for a workspace's review book; ``pipeline.NoDecisions`` on a cluster worker, where the
    coordinator applies them)."""

    def settle(
        self, sha256: str | None, matches: list[FaceMatch], notes: tuple[str, ...]
    ) -> tuple[list[FaceMatch], Verdict, tuple[str, ...]]: ...

    def settle_file(self, result: ScanResult) -> ScanResult: ...

    def decided_since(self, when: str) -> set[str]: ...


@dataclass(frozen=True)
class ConsentRecord:
    """Why a student is on the Include list (never anything about their face)."""

    student_id: str
    source: str  # "sis": the export's consent column; "by hand": `optout-guard include add`
    consent_date: str  # YYYY-MM-DD the family consented (the export's date column, or as given), "" unknown
    recorded_at: str  # ISO-8601 UTC: when optout-guard recorded it
    recorded_by: str = ""  # the account or OS user, for consent handled by hand


@dataclass(frozen=True)
class Recognised:
    """A face's nearest consenting student and its nearest opted-out student (raw distances)."""

    student_id: str
    distance: float
    nearest_opted_out: float  # inf when no opted-out student was searched
