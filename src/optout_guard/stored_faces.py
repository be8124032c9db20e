"""What the audit keeps of a checked photo's or clip's faces: geometry and decisions, never an embedding.

One encoder (:func:`encode`, written with each row of the audit's state) and one decoder
(:func:`decode`): the audit's re-checks and its cached re-decisions, the report's thumbnails, a
clip's re-decision from its stored tracks and its contact sheet, and the per-student photo list all
read the same :class:`StoredFace` (issue 29: there were five decoders, and ``video`` knew the
audit's storage format).

Per face: box, landmarks, page, detection score, whether it was upright and its tilt, the
decision, its reason and code, the closest student and distance, whether it was embedded at all
(``judged``) and, when it was cleared by recognising a consenting student, who. Per clip track also
its times, its stream and the geometry of the best sightings it was decided from (so that a re-check
decodes only those frames), and the clip's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from optout_guard.types import Box, Candidate, Decision, Face, FaceMatch, ReasonCode, ScanResult, Track, Unjudged


@dataclass(frozen=True)
class StoredTrack:
    """A clip track as stored: its times, stream, and the sightings it was decided from."""

    first: float
    last: float
    best_time: float
    seen: int
    judged: int
    stream: int
    best: tuple[tuple[float, Face], ...]  # (time, face in the clip's upright original pixels)

    def as_track(self) -> Track:
        return Track(self.first, self.last, self.best_time, self.seen, self.judged, self.best, self.stream)


@dataclass(frozen=True)
class StoredFace:
    face: Face
    decision: Decision
    code: ReasonCode
    reason: str
    student_id: str | None
    distance: float | None
    judged: bool  # False: too small, blurred, turned… never embedded
    consenting: str | None = None
    track: StoredTrack | None = None
    clip_size: tuple[int, int] | None = None  # a clip's upright original size, when the check recorded it

    @property
    def unjudged(self) -> Unjudged | None:
        """Why the face could not be judged (None when it was)."""
        return None if self.judged else Unjudged(self.code, self.reason or "face could not be judged")

    def match(self) -> FaceMatch:
        """The stored decision as a match (the closest student only: the others were not kept)."""
        who = (Candidate(self.student_id, self.distance or 0.0),) if self.student_id else ()
        return FaceMatch(self.face, self.decision, who, self.reason, self.code, self.consenting)


def _xy(values: Any) -> np.ndarray:
    return np.asarray(values, np.float32)


def _rounded(landmarks: np.ndarray) -> list:
    return np.asarray(landmarks, float).round(2).tolist()


def encode(result: ScanResult) -> str:
    """A result's faces as stored (JSON text)."""
    tracks = result.clip.tracks if result.clip is not None else None
    rows = []
    for i, m in enumerate(result.faces):
        row: dict[str, Any] = {}
        if tracks is not None and (t := tracks[i]):
            row["clip_size"] = list(result.size) if result.size else None
            row["track"] = {
                "first": t.first, "last": t.last, "best_time": t.best_time, "seen": t.seen, "judged": t.judged,
                "stream": t.stream,
                "best": [{"time": when, "box": [f.box.x, f.box.y, f.box.w, f.box.h], "landmarks": _rounded(f.landmarks)}
                         for when, f in t.best],
            }  # fmt: skip
        row |= {
            "box": [m.face.box.x, m.face.box.y, m.face.box.w, m.face.box.h],
            "landmarks": _rounded(m.face.landmarks),
            "page": m.face.page,
            "score": round(m.face.score, 3),
            "upright": m.face.upright,
            "tilt": round(m.face.tilt, 1),  # a turned face is turned upright again on re-check
            "decision": m.decision.value,
            "student_id": m.student_id,
            "distance": None if m.distance is None else round(m.distance, 4),
            "reason": m.reason,
            "code": m.code.value,
            "judged": bool(m.candidates),
        }
        if m.consenting:
            row["consenting"] = m.consenting
        rows.append(row)
    return json.dumps(rows)


def decode(stored: str | list[dict[str, Any]] | None) -> list[StoredFace]:
    """Stored faces from their JSON text (or its parsed list). Rows written by earlier versions lack
    some fields: ``tilt`` 0 (such a face stays "turned", review), ``code`` not_judged, score 1."""
    rows = json.loads(stored or "[]") if isinstance(stored, str) or stored is None else stored
    faces = []
    for f in rows:
        t = f.get("track")
        track = None
        if t is not None:
            best = tuple((float(s["time"]), Face(Box(*s["box"]), 1.0, _xy(s["landmarks"]))) for s in t["best"])
            track = StoredTrack(float(t["first"]), float(t["last"]), float(t["best_time"]), int(t["seen"]),
                                int(t["judged"]), int(t.get("stream", 0)), best)  # fmt: skip
        size = f.get("clip_size")
        faces.append(
            StoredFace(
                Face(Box(*f["box"]), f.get("score", 1.0), _xy(f["landmarks"]), f.get("page", 0), f.get("upright", True),
                     f.get("tilt", 0.0)),
                Decision(f.get("decision", "review")),
                ReasonCode(f.get("code", "not_judged")),
                f.get("reason") or "",
                f.get("student_id"),
                f.get("distance"),
                bool(f.get("judged", True)),
                f.get("consenting"),
                track,
                (int(size[0]), int(size[1])) if size else None,
            )
        )
    return faces


def is_clip(faces: list[StoredFace]) -> bool:
    """Faces stored from a clip (tracks), not a photo."""
    return any(f.track is not None for f in faces)
