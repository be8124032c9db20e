"""Checking a video clip: sampled frames → faces → tracks → one decision per track → one verdict.

A clip is not a pile of photos. Frames are sampled at ``clip_frames_per_second`` (plus the first
frame after every scene cut), faces are found in each and linked into *tracks* (box overlap from
one sample to the next; a scene cut ends every track), and each track is decided once, from its
best few frames (largest, most confident faces that pass the quality gate; their embeddings
averaged): one person on screen = one decision = one line of output = at most one review,
however long they stay. Every face is quality-gated, only the best few per track are embedded,
which is what makes a clip cheap. Fail closed: a clip that cannot be opened, or breaks off
part-way, is *review* with the reason; one longer than ``max_clip_seconds`` is checked up to there
and is *review* ("only the first N minutes were checked").
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from optout_guard import annotate, postable
from optout_guard.embedding import embed_mirror_averaged, judgeable_chips
from optout_guard.errors import ClipUnreadable, ModelUnavailable
from optout_guard.fsutil import sha256_with_identity
from optout_guard.matching import copy_failed, unjudged_decision
from optout_guard.media.clip import (
    ChangeMap,
    Decoded,
    Frame,
    Look,
    Picture,
    Scout,
    format_time,
    probe,
    sample_frames,
    write_blurred_copy,
)
from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.stored_faces import StoredFace
from optout_guard.types import (
    Box,
    ClipSummary,
    Decision,
    Face,
    FaceMatch,
    LoadedImage,
    ReasonCode,
    ScanResult,
    Track,
    Unjudged,
    Verdict,
)

if TYPE_CHECKING:
    from optout_guard.pipeline import Guard, Redaction


log = logging.getLogger(__name__)

WORKING_SIDE = 1280  # frames are examined at most this large (a 1080p frame: 1280×720, one detector pass)
BEST_FRAMES = 3  # a track is judged from (the average of) its best this many faces
KEEP_CHIPS = 6  # aligned faces kept per track while the clip streams by (bounded memory)
LINK_GAP = 1.0  # seconds a face may go unseen (turned away, covered) and still be the same track
REDACT_HOLD = 0.5  # seconds a blurred box is held before a track's first and after its last sighting
CROP_SIDE = 320  # contact-sheet tile
# Looking at parts of a frame (see ``_parts``): a face's box grown by this share of its size on each
# side is looked at again at every sample, found faces or not (a face that stands still changes
# nothing); changed parts are grown by PART_PAD px plus this share of their size, so a face partly
# in them is whole in the part (one that is not asks for a whole look).
FACE_MARGIN = 0.5
PART_GROW = 0.25
PART_PAD = 16
WHOLE_SHARE = 0.4  # parts covering more of the frame than this: one whole look instead
SPARSE, SPARSE_TILE = 4, 8  # a changed shape whose box is over 4× its blocks is looked at in 8×8-block pieces
COPY_FACE_MARGIN = 0.2  # the copy looks at every frame: a face moves little from one to the next
# A sample looks at the whole frame at least this often, whatever changed: a face that came into
# view too faintly for the change map (a dark hall) is looked for at least every WHOLE_EVERY s.
WHOLE_EVERY = 5.0


@dataclass
class _Sighting:
    time: float
    face: Face
    chip: np.ndarray | None
    unjudged: Unjudged | None
    quality: float


@dataclass
class _Track:
    boxes: list[tuple[float, Box]] = field(default_factory=list)
    best: list[_Sighting] = field(default_factory=list)  # judgeable sightings, best first (≤ KEEP_CHIPS)
    top: _Sighting | None = None  # the best sighting of all (judgeable or not): its box is the track's
    crop: tuple[np.ndarray, Box] | None = None  # the top sighting's neighbourhood, for the contact sheet
    codes: collections.Counter[ReasonCode] = field(default_factory=collections.Counter)
    texts: dict[ReasonCode, str] = field(default_factory=dict)
    seen: int = 0
    stream: int = 0  # which video stream of the clip (position among its video streams)
    streams: int = 1  # how many the clip has (the reason names the stream when more than one)

    @property
    def first(self) -> float:
        return self.boxes[0][0]

    @property
    def last(self) -> float:
        return self.boxes[-1][0]

    def add(self, s: _Sighting, pixels: np.ndarray, scale: float) -> None:
        self.boxes.append((s.time, s.face.box))
        self.seen += 1
        if s.chip is not None:
            self.best.append(s)
            self.best.sort(key=lambda x: -x.quality)
            del self.best[KEEP_CHIPS:]
        elif s.unjudged is not None:
            self.codes[s.unjudged.code] += 1
            self.texts.setdefault(s.unjudged.code, s.unjudged.text)
        better = self.top is None or (s.chip is not None, s.quality) > (self.top.chip is not None, self.top.quality)
        if better:
            self.top = s
            self.crop = _crop(pixels, s.face.box, scale)

    def box_at(self, t: float) -> Box | None:
        """Where the face is at time ``t`` (linear between sightings; held REDACT_HOLD s at the ends)."""
        if t < self.first - REDACT_HOLD or t > self.last + REDACT_HOLD:
            return None
        times = [b[0] for b in self.boxes]
        i = int(np.searchsorted(times, t))
        if i <= 0:
            return self.boxes[0][1]
        if i >= len(self.boxes):
            return self.boxes[-1][1]
        (t0, a), (t1, b) = self.boxes[i - 1], self.boxes[i]
        if t1 - t0 > LINK_GAP * 2:  # a long gap: both boxes (the face may have moved either way)
            return _union(a, b)
        w = (t - t0) / max(t1 - t0, 1e-6)
        return Box(*(float(x * (1 - w) + y * w) for x, y in zip((a.x, a.y, a.w, a.h), (b.x, b.y, b.w, b.h), strict=True)))


def _span(first: float, last: float, dash: str = "–") -> str:
    """When a person was on screen: "0:12–0:15", or "0:12" for under a second."""
    return f"{format_time(first)}{dash}{format_time(last)}" if last - first >= 1 else format_time(first)


def _overlap(a: Box, b: Box) -> bool:
    return a.x < b.right and b.x < a.right and a.y < b.bottom and b.y < a.bottom


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    return Box(x0, y0, max(a.right, b.right) - x0, max(a.bottom, b.bottom) - y0)


def _crop(pixels: np.ndarray, box: Box, scale: float) -> tuple[np.ndarray, Box]:
    """The face's neighbourhood (its box in working pixels, grown), and the box within the crop."""
    b = box.scaled(1.0 / scale)
    h, w = pixels.shape[:2]
    grow = max(b.w, b.h) * 0.9
    x0, y0 = max(0, int(b.x - grow)), max(0, int(b.y - grow))
    x1, y1 = min(w, int(b.right + grow)), min(h, int(b.bottom + grow))
    crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
    return crop, Box(b.x - x0, b.y - y0, b.w, b.h)


def _close(a: Box, b: Box) -> bool:
    """Same face moved a little between samples (fast motion: little overlap left)."""
    dx = (a.x + a.w / 2) - (b.x + b.w / 2)
    dy = (a.y + a.h / 2) - (b.y + b.h / 2)
    size = max(a.w, b.w)
    return (dx * dx + dy * dy) ** 0.5 < 0.8 * size and 0.5 <= a.w / max(b.w, 1e-6) <= 2.0


def _link(live: list[_Track], faces: list[Face]) -> list[_Track | None]:
    """For each face, the live track it continues (greedy by overlap), or None: a new track."""
    pairs = sorted(
        ((t.boxes[-1][1].iou(f.box), ti, fi) for ti, t in enumerate(live) for fi, f in enumerate(faces)), reverse=True
    )
    chosen: list[_Track | None] = [None] * len(faces)
    used: set[int] = set()
    for overlap, ti, fi in pairs:
        if ti in used or chosen[fi] is not None:
            continue
        if overlap >= 0.2 or _close(live[ti].boxes[-1][1], faces[fi].box):
            chosen[fi] = live[ti]
            used.add(ti)
    return chosen


def check_clip(
    guard: Guard,
    path: Path | str,
    annotate_dir: Path | None = None,
    redact: Redaction | None = None,
    scope: Scope = WHOLE_DISTRICT,
) -> ScanResult:
    """Check one clip (see the module's docstring). Never raises for a bad clip: it becomes review."""
    started = time.perf_counter()
    settings = guard.settings
    if settings.recognition:
        guard.require_index()  # an unusable index stops the run (as for photos)
    try:
        sha, identity = sha256_with_identity(path)
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror or exc}); check that the file is complete and readable"
        return ScanResult.fail_closed(str(path), reason, retry=True, problem=ReasonCode.UNREADABLE)
    ident = (identity.size, identity.mtime_ns)
    try:
        info = probe(path)
    except ClipUnreadable as exc:
        return ScanResult.fail_closed(str(path), f"video clip: {exc}; a person must watch it", sha256=sha, identity=ident,
                                      seconds=time.perf_counter() - started, problem=ReasonCode.CLIP_DAMAGED)  # fmt: skip
    every = 1.0 / settings.clip_frames_per_second
    notes: list[str] = []
    broken: list[float] = []
    tracks: list[_Track] = []
    frames = 0
    checked_until = 0.0
    played = info.duration
    stopped_at_limit = False
    # Every video stream is checked (a player may show any of them; cover art is a picture too).
    for number in range(info.video_streams):
        where = f"video stream {number + 1} of {info.video_streams}: " if info.video_streams > 1 else ""

        def on_error(reason: str, at: float, where: str = where) -> None:
            notes.append(f"{where}{reason}; the rest of the clip was not checked")
            broken.append(at)

        live: list[_Track] = []
        scene: list[_Track] = []  # the tracks since the last cut (where faces were)
        found: list[_Track] = []
        decoded = Decoded()
        # The check follows a camera that shifts (its looks only ask what is new in the scene); the
        # blurred copy does not: it keeps faces where they were in the frame while nothing changed.
        changes = ChangeMap(follow=True) if settings.detector == "centerface" else None
        scout = _scout(guard, live, scene, changes) if changes is not None else None
        try:
            for frame in sample_frames(
                path, every, WORKING_SIDE, settings.max_clip_seconds, on_error=on_error, stream_number=number,
                decoded=decoded, scout=scout, changes=changes,
            ):  # fmt: skip
                frames += 1
                checked_until = max(checked_until, frame.time)
                _examine(frame, found, live, scene, changes, guard, sha)
        except ClipUnreadable as exc:
            notes.append(f"{where}video clip: {exc}")
        except ModelUnavailable:
            raise  # a broken install stops the run (exit 2), as for photos
        except Exception as exc:  # fail closed: an unexpected error is a review, never an allow
            log.exception("checking the clip %s failed", path)
            why = f"could not be checked ({type(exc).__name__}: {exc}); please report this"
            return ScanResult.fail_closed(str(path), why, sha256=sha, identity=ident, retry=True,
                                          seconds=time.perf_counter() - started)  # fmt: skip
        for track in found:
            track.stream, track.streams = number, info.video_streams
        tracks += found
        played = max(played, decoded.seconds)
        # Over the limit, whatever the header says (a clip written live declares no duration).
        stopped_at_limit |= decoded.stopped_at_limit or info.duration > settings.max_clip_seconds + every
    if not frames and not notes:
        notes.append("no frame of the clip could be decoded; a person must watch it")
    if stopped_at_limit:
        minutes = settings.max_clip_seconds / 60
        length = f"this {format_time(played)} clip" if played > settings.max_clip_seconds + every else "this clip"
        notes.append(
            f"only the first {minutes:g} minute{'s' if minutes != 1 else ''} of {length} "
            "were checked; a person must watch the rest"
        )
    try:
        matches = [_decide(t, guard, scope) for t in tracks]
    except ModelUnavailable:
        raise
    except Exception as exc:  # fail closed, as above
        log.exception("deciding the tracks of %s failed", path)
        why = f"could not be checked ({type(exc).__name__}: {exc}); please report this"
        return ScanResult.fail_closed(str(path), why, sha256=sha, identity=ident, retry=True,
                                      seconds=time.perf_counter() - started)  # fmt: skip
    own = postable.lookup(settings, sha)
    if own is not None:  # a blurred clip this tool wrote: the faces it blurred are its own doing
        matches = postable.clear_own_blur(own, matches, [(t.first, t.last) for t in tracks])
    # What reviewers said about this clip's tracks (cards on the desk) counts, as for photos.
    matches, verdict, reasons = guard.settler.settle(sha, matches, tuple(notes))
    if not matches and verdict is Verdict.ALLOW:
        reasons = (f"no faces found in {frames} frames examined ({format_time(checked_until)} of video)",)
    if own is not None:
        reasons = (*reasons, own.describe())
    summary = ClipSummary(
        duration=played,
        checked_seconds=checked_until,
        frames_examined=frames,
        sample_every=every,
        rotation=info.rotation,
        has_audio=info.has_audio,
        tracks=tuple(
            Track(
                t.first,
                t.last,
                t.top.time if t.top else t.first,
                t.seen,
                len(t.best),
                tuple((b.time, b.face) for b in t.best[:BEST_FRAMES]),  # the sightings the decision used
                t.stream,
            )
            for t in tracks
        ),
    )
    annotated = redacted = None
    try:
        if annotate_dir is not None:
            annotated = str(write_contact_sheet(path, sha, tracks, matches, Path(annotate_dir)))
        if redact is not None and not broken:
            redacted = str(write_redacted_clip(path, sha, tracks, matches, Path(redact.folder), guard, info.shown_stream))
            if info.video_streams > 1:
                reasons = (*reasons, f"the blurred copy holds only video stream {info.shown_stream + 1} of "
                           f"{info.video_streams} (the one players show)")  # fmt: skip
        elif redact is not None:
            reasons = (*reasons, "no blurred copy: the clip could not be decoded to the end")
    except CopyLeaks as exc:  # the copy was read back and a face could still be seen: none is kept
        verdict, reasons = copy_failed(verdict, reasons, str(exc))
    except Exception as exc:  # a copy that fails is said, never an allow
        log.exception("writing a copy of %s failed", path)
        verdict, reasons = copy_failed(verdict, reasons, f"a copy could not be written ({type(exc).__name__}: {exc})")
    problem = ReasonCode.CLIP_DAMAGED if broken or not frames else ReasonCode.CLIP_TOO_LONG if stopped_at_limit else None
    return ScanResult(
        path=str(path),
        verdict=verdict,
        reasons=reasons,
        faces=tuple(matches),
        sha256=sha,
        size=(info.width, info.height),
        pages=1,
        seconds=time.perf_counter() - started,
        annotated_path=annotated,
        redacted_path=redacted,
        notes=tuple(notes),
        identity=ident,
        problem=problem,
        clip=summary,
    )


def _parts(
    blocks: np.ndarray,
    cell: tuple[float, float],
    size: tuple[int, int],
    faces: list[Box],
    skip: list[Box] | None = None,
    margin: float = FACE_MARGIN,
) -> tuple[list[Box], np.ndarray] | None:
    """Where to look in a working frame of ``size`` (w, h): the changed ``blocks`` of a
    :class:`ChangeMap` (but those in ``skip``), and around ``faces`` (boxes in working px); as
    rectangles, with the blocks they cover whole. None when they would cover over WHOLE_SHARE of
    the frame: one whole look is then the cheaper (a cut, a camera that turns: everything changed)."""
    import cv2

    width, height = size
    cw, ch = cell
    wanted = cv2.dilate(blocks.astype(np.uint8), np.ones((3, 3), np.uint8))  # a block's neighbours too
    for box in skip or ():
        wanted[_block_span(box, cell, blocks.shape)] = 0
    _, labels, stats, _ = cv2.connectedComponentsWithStats(wanted, connectivity=8)

    def part(x: int, y: int, w: int, h: int) -> Box:  # blocks -> working px, grown around
        # (a long thin strip — the edge a moving camera brings into view — grows by its width)
        long, short = max(w * cw, h * ch), min(w * cw, h * ch)
        grow = PART_PAD + PART_GROW * min(long, 3 * short)
        return Box(x * cw - grow, y * ch - grow, w * cw + 2 * grow, h * ch + 2 * grow)

    rects = []
    for label, (x, y, w, h, area) in enumerate(stats[1:], start=1):
        if w * h <= SPARSE * area:
            rects.append(part(x, y, w, h))
            continue
        # A sparse shape (two edges a moving camera brings into view, joined at a corner: an L) is
        # looked at piece by piece, SPARSE_TILE blocks square, not as the box around it.
        mine = labels[y : y + h, x : x + w] == label
        for ty in range(0, h, SPARSE_TILE):
            for tx in range(0, w, SPARSE_TILE):
                rows, cols = np.nonzero(mine[ty : ty + SPARSE_TILE, tx : tx + SPARSE_TILE])
                if rows.size:
                    top, left = y + ty + int(rows.min()), x + tx + int(cols.min())
                    rects.append(part(left, top, int(cols.max() - cols.min()) + 1, int(rows.max() - rows.min()) + 1))
    rects += [_grown(box, margin) for box in faces]  # (grown enough already)
    for i, r in enumerate(rects):  # within the frame
        x0, y0 = max(0.0, r.x), max(0.0, r.y)
        rects[i] = Box(x0, y0, max(0.0, min(float(width), r.right) - x0), max(0.0, min(float(height), r.bottom) - y0))
    rects = [r for r in rects if r.w > 0 and r.h > 0]
    merged = True
    while merged:  # parts that overlap are looked at as one, unless that one is larger than both
        merged = False  # (the edges a moving camera brings into view, along two sides: an L)
        for i, a in enumerate(rects):
            for j in range(i + 1, len(rects)):
                b = rects[j]
                if _overlap(a, b):
                    union = _union(a, b)
                    if union.w * union.h > a.w * a.h + b.w * b.h:
                        continue  # (a face on both is found in each, once: the passes' boxes are merged)
                    rects[i], merged = union, True
                    del rects[j]
                    break
            if merged:
                break
    if sum(r.w * r.h for r in rects) > WHOLE_SHARE * width * height:
        return None
    covered = np.zeros_like(blocks)
    for r in rects:  # blocks wholly inside a part (a block's grey is the mean of all its pixels)
        covered[math.ceil(r.y / ch) : int(r.bottom // ch), math.ceil(r.x / cw) : int(r.right // cw)] = True
    return rects, covered


def _block_span(box: Box, cell: tuple[float, float], shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The blocks of a change map's grid (cells of ``cell`` px) that ``box`` touches."""
    (cw, ch), (rows, cols) = cell, shape[:2]
    return (slice(max(0, int(box.y // ch)), min(rows, math.ceil(box.bottom / ch))),
            slice(max(0, int(box.x // cw)), min(cols, math.ceil(box.right / cw))))  # fmt: skip


def _grown(box: Box, share: float = FACE_MARGIN) -> Box:
    grow = share * max(box.w, box.h)
    return Box(box.x - grow, box.y - grow, box.w + 2 * grow, box.h + 2 * grow)


def _scout(guard: Guard, live: list[_Track], scene: list[_Track], changes: ChangeMap) -> Scout:
    """Looks at a frame between samples: sample it when it shows a face that is not where a live
    track's face last was (a face no sample saw). Only what changed since it was last looked at,
    away from the faces the next sample looks at anyway, is looked at, as a sample would (small
    faces too); when much changed (a moving camera), the whole frame is looked at small instead."""
    asked: list[tuple[float, Box]] = []  # where a scouted face made a sample (once a second at most)

    def new_face(box: Box, t: float) -> bool:
        near = [tr.boxes[-1][1] for tr in live if t - tr.last <= LINK_GAP] + [b for _, b in asked]
        if any(b.iou(box) >= 0.2 or _close(b, box) for b in near):
            return False
        asked.append((t, box))
        return True

    def wants(look: Look) -> bool:
        t = look.time
        asked[:] = [(when, b) for when, b in asked if t - when <= LINK_GAP]
        blocks = changes.changed()
        if not blocks.any():
            return False  # nothing changed since it was looked at: nothing new can be there
        # Around the faces already found the next sample looks anyway (boxes in working px).
        skip = [_grown(b.scaled(1.0 / look.scale)) for b in [tr.boxes[-1][1] for tr in scene] + [b for _, b in asked]]
        plan = _parts(blocks, changes.cell, look.size, [], skip)
        if plan is None:  # much changed: the whole frame, small (cheap), for a face not where faces are
            pixels, scale = look.small()
            boxes = guard.face_models.detector.quick_boxes(pixels, guard.settings.detection_threshold)
            return any(new_face(Box(float(x), float(y), float(w), float(h)), t) for x, y, w, h in boxes * scale)
        parts, covered = plan
        if not parts:
            return False  # what changed is where faces are: the next sample looks there
        pixels, scale = look.whole()
        image = LoadedImage("", "", "clip", (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale)), (pixels,), scale)
        faces = guard.face_models.detector.detect_in(image, parts, guard.settings)
        if faces is None:
            return True  # a face still cut by a part grown around it: the sample looks at the whole frame
        if [f for f in faces if new_face(f.box, t)]:  # (each new face is remembered as asked)
            return True
        if not faces:
            changes.looked(covered, t)  # looked at as a sample would, and nothing there
        return False

    return wants


def _examine(
    frame: Frame, tracks: list[_Track], live: list[_Track], scene: list[_Track], changes: ChangeMap | None, guard: Guard, sha: str
) -> None:
    """Find the faces of one sampled frame, gate them, and add them to their tracks. With a change
    map, only the parts changed since they were last looked at, and around every face of the scene
    so far, are looked at; or the whole frame when that is most of it."""
    settings, face_models = guard.settings, guard.face_models
    height, width = frame.pixels.shape[:2]
    image = LoadedImage("", sha, "clip", (round(width * frame.scale), round(height * frame.scale)), (frame.pixels,), frame.scale)
    if frame.cut:
        scene.clear()
    faces = None
    covered: np.ndarray | None = None
    changed = changes.changed() if changes is not None and changes.now is not None else None
    if changes is not None and changed is not None and frame.time - changes.whole_at < WHOLE_EVERY:
        plan = _parts(changed, changes.cell, (width, height), [t.boxes[-1][1].scaled(1.0 / frame.scale) for t in scene])
        if plan is not None:
            parts, covered = plan
            faces = face_models.detector.detect_in(image, parts, settings) if parts else []
    if faces is None:
        faces = face_models.detector.detect(image, settings)
        if changes is not None and changes.now is not None:
            covered, changes.whole_at = np.ones_like(changes.now, bool), frame.time
    if settings.recognition:
        chips, owners, unjudged = judgeable_chips(image, faces, settings, face_models)
    else:
        chips, owners = [], []
        only = Unjudged(ReasonCode.DETECTION_ONLY, "found (detection-only mode: no recognition)")
        unjudged = dict.fromkeys(range(len(faces)), only)
    chip_of = dict(zip(owners, chips, strict=True))
    if frame.cut:
        live.clear()  # a new scene: nobody continues across a cut
    live[:] = [t for t in live if frame.time - t.last <= LINK_GAP + 1e-6]
    for i, (face, track) in enumerate(zip(faces, _link(live, faces), strict=True)):
        if track is None:
            track = _Track()
            tracks.append(track)
            live.append(track)
            scene.append(track)
            if changes is not None and changed is not None:
                # A new face where nothing changed was there at the last look of that place, which
                # missed it (a face too faint for the change map, found by a whole look): it is
                # taken to be on screen since then (the copy blurs it from then on).
                where = _block_span(face.box.scaled(1.0 / frame.scale), changes.cell, changed.shape)
                since = changes.unchanged_since(where, changed)
                if since is not None and math.isfinite(since) and since < frame.time:
                    track.boxes.append((since, face.box))
        quality = face.box.w * face.score
        track.add(_Sighting(frame.time, face, chip_of.get(i), unjudged.get(i), quality), frame.pixels, frame.scale)
    if changes is not None and covered is not None:
        changes.looked(covered, frame.time)


def recheck_clip(guard: Guard, path: Path | str, stored: list[StoredFace], scope: Scope = WHOLE_DISTRICT) -> ScanResult:
    """Decide a clip's tracks again against today's gallery from what the audit kept (geometry
    only: each track's best sightings' times, boxes and landmarks): only those frames are decoded.
    Tracks nobody could judge keep their reason; anything unexpected falls back to a full check."""
    from optout_guard.media.clip import frame_at

    started = time.perf_counter()
    try:
        sha, identity = sha256_with_identity(path)
        matches: list[FaceMatch] = []
        tracks: list[Track] = []
        frames: dict[tuple[int, float], np.ndarray] = {}
        for entry in stored:
            if entry.track is None:
                raise ValueError("a stored face without a track")  # not a clip's: checked whole, below
            sightings, number = entry.track.best, entry.track.stream
            track = entry.track.as_track()
            tracks.append(track)
            if not sightings:
                why = entry.unjudged or Unjudged(entry.code, entry.reason or "face could not be judged")
                matches.append(FaceMatch(entry.face, unjudged_decision(why), (), why.text, why.code))
                continue
            chips = []
            for when, face in sightings:
                if (number, when) not in frames:
                    frames[number, when] = frame_at(path, when, WORKING_SIDE, number)
                pixels = frames[number, when]
                # Boxes are stored in the clip's upright original pixels; the frame is at working size.
                chips.append(guard.face_models.aligner.chips(pixels, [face], _working_scale(pixels, entry.clip_size))[0])
            vectors = embed_mirror_averaged(chips, guard.face_models.encoder)
            match = _fused_decision(vectors, sightings[0][1], guard, scope)
            if match.decision is not Decision.CLEAR:
                match = dataclasses.replace(match, reason=f"{match.reason} — at {_span(track.first, track.last)}")
            matches.append(match)
    except Exception:  # noqa: BLE001 - the stored geometry does not fit (a re-encoded file?): check it whole
        log.info("re-deciding %s from its stored tracks failed; checking it whole", path)
        return guard.check(path, scope=scope)
    matches, verdict, reasons = guard.settler.settle(sha, matches, ())
    summary = ClipSummary(0.0, max((t.last for t in tracks), default=0.0), len(frames), 0.0, 0, False, tuple(tracks))
    return ScanResult(
        str(path), verdict, reasons, tuple(matches), sha256=sha, identity=(identity.size, identity.mtime_ns),
        seconds=time.perf_counter() - started, clip=summary,
    )  # fmt: skip


def _working_scale(pixels: np.ndarray, size: tuple[int, int] | None) -> float:
    """Original pixels per working pixel of a frame decoded at working size (``size``: the clip's
    upright original width and height, as the check recorded it)."""
    if not size:
        return 1.0
    return max(float(size[0]) / pixels.shape[1], float(size[1]) / pixels.shape[0])


def _fused_decision(vectors: np.ndarray, face: Face, guard: Guard, scope: Scope) -> FaceMatch:
    norm = float(np.mean(np.linalg.norm(vectors, axis=1)))
    fused = vectors.mean(axis=0)
    fused *= norm / max(float(np.linalg.norm(fused)), 1e-9)  # the length of one embedding, as the gallery's
    return guard.judge([face], fused[None, :], scope)[0]


def _decide(track: _Track, guard: Guard, scope: Scope) -> FaceMatch:
    """One decision per track: its best few judgeable faces, embeddings averaged, searched once."""
    assert track.top is not None
    face = track.top.face
    span = _span(track.first, track.last)
    if track.streams > 1:
        span = f"{span} in video stream {track.stream + 1} of {track.streams}"
    if not track.best:
        code, _ = track.codes.most_common(1)[0] if track.codes else (ReasonCode.NOT_JUDGED, 0)
        text = track.texts.get(code, "face could not be judged")
        return FaceMatch(face, unjudged_decision(Unjudged(code, text)), (), f"{text} (at {span})", code)
    best = track.best[:BEST_FRAMES]
    vectors = embed_mirror_averaged([s.chip for s in best if s.chip is not None], guard.face_models.encoder)
    match = _fused_decision(vectors, best[0].face, guard, scope)
    if match.decision is Decision.CLEAR:
        return match
    return dataclasses.replace(match, reason=f"{match.reason} — at {span}")


# ---- outputs -----------------------------------------------------------------------------------
def write_contact_sheet(path: Path | str, sha: str, tracks: list[_Track], matches: list[FaceMatch], out_dir: Path) -> Path:
    """One JPEG per clip: the best frame of every track that is not clear, boxed and labelled with its
    time on screen (all tracks when every one is clear), so a person sees in one picture why."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem or "clip"
    return annotate.save_jpeg(render_contact_sheet(tracks, matches), out_dir / f"{stem}.{sha[:8]}.jpg")


def stored_contact_sheet(path: Path | str, stored: list[StoredFace]) -> Image.Image:
    """The contact sheet again from what the audit stored (for the report's thumbnail): each track's
    best frame decoded on its own, no full decode."""
    from optout_guard.media.clip import frame_at

    tracks, matches = [], []
    for entry in stored:
        t, box = entry.track, entry.face.box
        if t is None:
            continue  # only a clip's tracks have a frame to show
        pixels = frame_at(path, t.best_time, WORKING_SIDE, t.stream)
        track = _Track(boxes=[(t.first, box), (t.last, box)])
        track.crop = _crop(pixels, box, _working_scale(pixels, entry.clip_size))
        tracks.append(track)
        matches.append(entry.match())
    return render_contact_sheet(tracks, matches)


def render_contact_sheet(tracks: list[_Track], matches: list[FaceMatch]) -> Image.Image:
    shown = [(t, m) for t, m in zip(tracks, matches, strict=True) if m.decision is not Decision.CLEAR] or list(
        zip(tracks, matches, strict=True)
    )
    columns = max(1, min(4, len(shown)))
    rows = max(1, -(-len(shown) // columns))
    label_h = 44
    sheet = Image.new("RGB", (columns * CROP_SIDE, rows * (CROP_SIDE + label_h)), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    for n, (track, match) in enumerate(shown):
        x, y = (n % columns) * CROP_SIDE, (n // columns) * (CROP_SIDE + label_h)
        colour = annotate.COLOURS[match.decision]
        if track.crop is not None:
            crop, box = track.crop
            tile = Image.fromarray(crop)
            factor = min(CROP_SIDE / max(tile.size), 4.0)
            tile = tile.resize((max(1, round(tile.width * factor)), max(1, round(tile.height * factor))))
            ox, oy = x + (CROP_SIDE - tile.width) // 2, y + (CROP_SIDE - tile.height) // 2
            sheet.paste(tile, (ox, oy))
            b = box.scaled(factor)
            draw.rectangle([ox + b.x, oy + b.y, ox + b.right, oy + b.bottom], outline=colour, width=3)
        span = (
            f"{format_time(track.first)} - {format_time(track.last)}"
            if track.last - track.first >= 1
            else format_time(track.first)
        )
        label = annotate.label_for(match) or "clear"
        draw.rectangle([x, y + CROP_SIDE, x + CROP_SIDE - 2, y + CROP_SIDE + label_h - 2], fill=colour)
        draw.text((x + 6, y + CROP_SIDE + 4), label[:34], fill=(255, 255, 255), font=font)
        draw.text((x + 6, y + CROP_SIDE + 23), f"on screen {span}", fill=(255, 255, 255), font=font)
    return sheet


REDACT_MARGIN = 1.0  # seconds around a track that is not clear in which every frame's faces are found
# Every frame there is searched at this size (a 40 px face of a 1280 px sample is 20 px here, which
# CenterFace finds; 4× cheaper than the samples' size: ~15 ms a frame instead of ~70).
REDACT_SIDE = 640


class _Redaction:
    """Which boxes to blur in a frame of a clip's copy fit to post. Boxes are known only at the
    sampled frames, and a face moves between them; so in the time ranges of every track that is not
    clear (plus REDACT_MARGIN), the faces of **every** frame are found, and each is blurred unless it
    is clearly a face that was judged fine (on a clear track's path, and on no other's). The same
    rule then finds any face left in the copy: :meth:`leaks`."""

    def __init__(self, tracks: list[_Track], matches: list[FaceMatch], stream: int, guard: Guard) -> None:
        pairs = [(t, m) for t, m in zip(tracks, matches, strict=True) if t.stream == stream]
        self.hidden = [t for t, m in pairs if m.decision is not Decision.CLEAR]
        self.clear = [t for t, m in pairs if m.decision is Decision.CLEAR]
        self.ranges = [(t.first - REDACT_MARGIN, t.last + REDACT_MARGIN) for t in self.hidden]
        self.guard = guard
        self.frames_searched = 0
        self.writing, self.reading = _Looks(), _Looks()  # the copy's frames as written, and read back

    def watched(self, t: float) -> bool:
        return any(a <= t <= b for a, b in self.ranges)

    def _faces(self, small: np.ndarray, looks: _Looks, t: float, pixel_scale: float) -> list[Box]:
        """Faces in ``small`` (the frame at ``t``, at most REDACT_SIDE px — both callers have FFmpeg
        scale it so — at ``pixel_scale`` original pixels per pixel), in the clip's original pixels —
        the boxes' convention everywhere. Only what changed since it was last looked at is looked at
        (see :class:`ChangeMap`; the whole frame at least every WHOLE_EVERY s); faces found before
        where nothing changed are where they were."""
        self.frames_searched += 1
        height, width = small.shape[:2]
        size = (round(width * pixel_scale), round(height * pixel_scale))
        image = LoadedImage("", "", "clip", size, (small,), pixel_scale)
        changes, detector = looks.changes, self.guard.face_models.detector
        changes.update_picture(small)
        blocks = changes.changed()
        # A known face where something changed is looked at whole (the change may be only its edge).
        known = [b.scaled(1.0 / image.scale) for b in looks.known]
        moved = [b for b in known if blocks[_block_span(_grown(b), changes.cell, blocks.shape)].any()]
        plan = None
        if t - changes.whole_at < WHOLE_EVERY:
            plan = _parts(blocks, changes.cell, (small.shape[1], small.shape[0]), moved, margin=COPY_FACE_MARGIN)
        found = None
        if plan is not None:
            parts, covered = plan
            if not parts:
                return looks.known  # nothing changed: the same faces
            found = detector.detect_in(image, parts, self.guard.settings, landmarks=False)
        if found is None:  # the whole frame as one part (no landmarks: only boxes are blurred)
            whole = [Box(0.0, 0.0, float(small.shape[1]), float(small.shape[0]))]
            every = detector.detect_in(image, whole, self.guard.settings, landmarks=False)
            looks.known = [f.box for f in (every if every is not None else detector.detect(image, self.guard.settings))]
            changes.looked(np.ones_like(blocks), t)
            changes.whole_at = t
            return looks.known

        kept = [b for b in looks.known if not any(_overlap(b.scaled(1.0 / image.scale), p) for p in parts)]
        looks.known = [f.box for f in found] + kept  # (the parts' faces found again, the others kept)
        changes.looked(covered, t)
        return looks.known

    def _fine(self, box: Box, t: float) -> bool:
        def on(track: _Track) -> bool:
            path = track.box_at(t)
            return path is not None and (path.iou(box) >= 0.3 or _close(path, box))

        return any(on(c) for c in self.clear) and not any(on(h) for h in self.hidden)

    def boxes(self, t: float, picture: Picture) -> list[Box]:
        """The boxes to blur at ``t``; ``picture``: the upright frame (made only where faces are
        searched, and at the size they are searched at)."""
        held = [b for b in (tr.box_at(t) for tr in self.hidden) if b is not None]
        if not self.watched(t):
            return held
        pixels, scale = picture.small(REDACT_SIDE)
        return held + [b for b in self._faces(pixels, self.writing, t, scale) if not self._fine(b, t)]

    def leaks(self, t: float, pixels: np.ndarray, pixel_scale: float) -> list[Box]:
        """Faces still to be seen in the copy where a face that is not clear was: none, or no copy.
        ``pixels``: the copy's frame at ``pixel_scale`` original pixels per pixel."""
        return [b for b in self._faces(pixels, self.reading, t, pixel_scale) if not self._fine(b, t)] if self.watched(t) else []


@dataclass
class _Looks:
    """One pass over a clip's frames looking only at what changed: the change map, and the faces
    (original px) found so far where nothing has changed since."""

    changes: ChangeMap = field(default_factory=lambda: ChangeMap())  # (looked up when made: tests replace it)
    known: list[Box] = field(default_factory=list)


def write_redacted_clip(
    path: Path | str, sha: str, tracks: list[_Track], matches: list[FaceMatch], out_dir: Path, guard: Guard, stream: int = 0
) -> Path:
    """The clip (its video stream ``stream``) with every face that is not clearly fine blurred in
    every frame it is on screen (:class:`_Redaction`), audio copied, no metadata; then the copy is
    read back at its full frame rate where those faces were, and if a face can still be found
    there, the copy is deleted and :class:`CopyLeaks` says when (no copy rather than one that shows
    a student)."""
    from optout_guard.media.clip import frames_where

    redaction = _Redaction(tracks, matches, stream, guard)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem or "clip"
    target = out_dir / f"{stem}.{sha[:8]}.redacted.mp4"
    write_blurred_copy(path, target, redaction.boxes, annotate.blur_regions, stream)
    if not redaction.ranges:
        return target
    end = max(b for _, b in redaction.ranges)
    try:  # every frame of the copy where a face that is not clear was
        for frame in frames_where(target, redaction.watched, REDACT_SIDE, end + 1.0):
            if redaction.leaks(frame.time, frame.pixels, frame.scale):
                raise CopyLeaks(frame.time)
    except BaseException:  # a leak, or a copy that cannot be read back: no copy is left
        target.unlink(missing_ok=True)
        raise
    regions = [
        postable.Blurred(_span_box(t), t.first - REDACT_MARGIN, t.last + REDACT_MARGIN) for t in redaction.hidden if t.boxes
    ]
    with contextlib.suppress(OSError):
        postable.record(guard.settings, target, path, regions)
    return target


def _span_box(track: _Track) -> Box:
    """Every box a track had, as one box (where it was blurred, all told)."""
    box = track.boxes[0][1]
    for _, b in track.boxes[1:]:
        box = _union(box, b)
    return box


class CopyLeaks(Exception):
    """A face that is not clearly fine could still be found in the blurred copy: it was deleted."""

    def __init__(self, at: float) -> None:
        super().__init__(
            f"no blurred copy: a face that is not clearly fine could still be seen in it at {format_time(at)}; "
            "a person must blur this clip"
        )
        self.at = at
