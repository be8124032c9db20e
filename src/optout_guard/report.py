"""Results as plain data (the ``--json`` document). Never contains embeddings."""

from __future__ import annotations

from typing import Any

from optout_guard import __version__
from optout_guard.config import Settings
from optout_guard.types import FaceMatch, ScanResult, Verdict

SCHEMA_VERSION = 1


def face_to_dict(match: FaceMatch) -> dict[str, Any]:
    face = match.face
    return {
        "box": list(face.box.as_ints()),  # [left, top, width, height] in original pixels
        "page": face.page,
        "detection_score": round(face.score, 3),
        "decision": match.decision.value,
        "student_id": match.student_id if match.decision.value != "clear" else None,
        "distance": None if match.distance is None else round(match.distance, 4),
        "candidates": [{"student_id": c.student_id, "distance": round(c.distance, 4)} for c in match.candidates],
        "reason": match.reason or None,
    }


def result_to_dict(result: ScanResult) -> dict[str, Any]:
    return {
        "path": result.path,
        "verdict": result.verdict.value,
        "reasons": list(result.reasons),
        "students": list(result.blocked_students),
        "sha256": result.sha256,
        "width": result.size[0] if result.size else None,
        "height": result.size[1] if result.size else None,
        "pages": result.pages,
        "faces": [face_to_dict(m) for m in result.faces],
        "annotated": result.annotated_path,
        "seconds": round(result.seconds, 3),
    }


def summary(results: list[ScanResult], skipped: int = 0) -> dict[str, int]:
    counts = {v.value: 0 for v in Verdict}
    for r in results:
        counts[r.verdict.value] += 1
    return {"photos": len(results), **counts, "skipped": skipped}


def batch_document(results: list[ScanResult], skipped: list[tuple[str, str]], settings: Settings) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": f"optout-guard {__version__}",
        "settings": {
            "block_distance": settings.block_distance,
            "review_distance": settings.review_distance,
            "min_face_px": settings.min_face_px,
            "detector": settings.detector,
        },
        "summary": summary(results, len(skipped)),
        "photos": [result_to_dict(r) for r in results],
        "skipped": [{"path": p, "reason": why} for p, why in skipped],
    }
