"""Which faces may be embedded, and how a face's embedding is made (the product's judgement, the
same for the real models and for fakes; the models themselves are behind ``types.FaceModels``,
``face_models``). No I/O.

Faces too small, too blurred, turned or cut by the edge for the embedding to be trusted are not
embedded: they come back with a reason instead, and the photo goes to review. The others are
aligned (the aligner), embedded (the encoder) and, for the product's recipe, averaged with their
mirror image.
"""

from __future__ import annotations

import cv2
import numpy as np

from optout_guard.config import Settings
from optout_guard.types import EMBEDDING_DIM, Embeddings, Encoder, Face, FaceModels, LoadedImage, ReasonCode, Unjudged

EMBED_BATCH = 16  # faces per forward pass: bounded working memory, most of the batching gain


TURNED = "face turned on its side (or upside down): it cannot be checked as it is"
PARTLY_VISIBLE = "face cut by the edge of the photo: too little of it shows to clear it"
# CenterFace shrinks the box of a face cut by the picture's edge to what is visible, so a cut face
# is a box that touches an edge and has lost its square shape (whole faces: sides within ~10% of
# each other). Measured on LFW faces cut off step by step, and on real photos for what it costs:
# docs/how-it-works.md "Faces cut by the edge" (scripts/measure_edge_faces.py).
MIN_SIDE_RATIO = 0.8


def partly_visible(face: Face, width: float, height: float) -> bool:
    """True for a face box that touches the picture's edge and is much narrower (or lower) than a
    whole face: the embedder would see part of a face and could clear it with confidence."""
    box = face.box
    margin = 0.02 * max(box.w, box.h)
    touches = box.x <= margin or box.y <= margin or box.right >= width - margin or box.bottom >= height - margin
    return touches and min(box.w, box.h) / max(box.w, box.h, 1e-6) < MIN_SIDE_RATIO


def is_upright(face: Face) -> bool:
    """A face the embedder can be trusted on: the detector saw it upright (CenterFace's own
    landmarks: mouth below eyes), and its box is not much wider than tall (faces lying on their side
    get boxes about twice as wide as tall: 2.0–2.2 on insightface's rotation set)."""
    return face.upright and face.box.w / max(face.box.h, 1e-6) <= 1.5  # narrow boxes: faces cut by the edge


def sharpness(chip: np.ndarray) -> float:
    """Variance of the Laplacian of the grey aligned chip: low means blurred (or featureless)."""
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def embed_chips(chips: list[np.ndarray], encoder: Encoder) -> np.ndarray:
    """(N, 128) float32 embeddings of aligned chips, in batches (bounded memory for crowd photos)."""
    if not chips:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    stacked = np.stack(chips)
    parts = [encoder.encode(stacked[i : i + EMBED_BATCH]) for i in range(0, len(stacked), EMBED_BATCH)]
    return np.concatenate(parts).astype(np.float32).reshape(-1, EMBEDDING_DIM)


def _average_with_mirror(plain: np.ndarray, chips: list[np.ndarray], encoder: Encoder) -> np.ndarray:
    mirrored = embed_chips([np.ascontiguousarray(c[:, ::-1]) for c in chips], encoder)
    mean = plain + mirrored
    mean *= np.linalg.norm(plain, axis=1, keepdims=True) / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return mean.astype(np.float32)


def embed_mirror_averaged(chips: list[np.ndarray], encoder: Encoder) -> np.ndarray:
    """The product's embedding (``models.EMBEDDING_RECIPE``): the mean of the embeddings of each chip
    and of its mirror image, scaled back to the first one's length. A face is the same person
    mirrored, so the average cancels some of one pose's and one lighting's noise."""
    if not chips:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return _average_with_mirror(embed_chips(chips, encoder), chips, encoder)


def mirror_some(embedded: Embeddings, rows: list[int], encoder: Encoder) -> Embeddings:
    """Mirror-average the vectors in ``rows`` of an ``embed_faces(..., mirror=False)`` result."""
    rows = [r for r in rows if not embedded.mirrored[r]]
    if not rows:
        return embedded
    vectors = embedded.vectors.copy()
    vectors[rows] = _average_with_mirror(vectors[rows], [embedded.chips[r] for r in rows], encoder)
    mirrored = list(embedded.mirrored)
    for r in rows:
        mirrored[r] = True
    return Embeddings(vectors, embedded.judged, embedded.unjudged, embedded.chips, tuple(mirrored))


def turned_face_chip(
    pixels: np.ndarray, face: Face, scale: float, settings: Settings, face_models: FaceModels
) -> np.ndarray | None:
    """The aligned chip of a face lying on its side or upside down: its region is cut out, turned by
    the face's tilt (either way, since the sign depends on the eye order), and the face is found
    again there; it counts only if it is found upright near the middle. None when that fails."""
    box = face.box.scaled(1.0 / scale)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    side = int(1.8 * max(box.w, box.h)) + 2
    x0, y0 = int(cx - side / 2), int(cy - side / 2)
    crop = pixels[max(0, y0) : max(0, y0 + side), max(0, x0) : max(0, x0 + side)]
    if crop.size == 0:
        return None
    top, left = max(0, -y0), max(0, -x0)
    crop = cv2.copyMakeBorder(
        crop, top, side - crop.shape[0] - top, left, side - crop.shape[1] - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )
    for angle in (face.tilt, -face.tilt):
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        rotated = np.ascontiguousarray(cv2.warpAffine(crop, matrix, (side, side)))
        view = LoadedImage("", "", "", (side, side), (rotated,))
        centred = [f for f in face_models.detector.detect(view, settings) if _near_middle(f, side)]
        found = [f for f in centred if is_upright(f)]
        if found:
            best = max(found, key=lambda f: f.box.w * f.box.h)
            return face_models.aligner.chips(rotated, [best], 1.0)[0]
    return None


def _near_middle(face: Face, side: float) -> bool:
    return abs(face.box.x + face.box.w / 2 - side / 2) < side / 4 and abs(face.box.y + face.box.h / 2 - side / 2) < side / 4


def _page_size(image: LoadedImage, page: int) -> tuple[float, float]:
    """(width, height) of one page in original pixels."""
    height, width = image.pages[min(page, len(image.pages) - 1)].shape[:2]
    return width * image.scale, height * image.scale


def embed_faces(
    image: LoadedImage, faces: list[Face], settings: Settings, face_models: FaceModels, mirror: bool = True
) -> Embeddings:
    """Embed every face that can be judged; say why for the others.

    ``mirror=False`` leaves the (second) mirrored pass for later (:func:`mirror_some`): the check
    needs it only for faces that come near an enrolled student, most faces in a crowd do not."""
    chips, chip_owner, unjudged = judgeable_chips(image, faces, settings, face_models)
    if mirror:
        vectors = embed_mirror_averaged(chips, face_models.encoder)
        return Embeddings(vectors, tuple(chip_owner), unjudged, (), (True,) * len(chips))
    return Embeddings(embed_chips(chips, face_models.encoder), tuple(chip_owner), unjudged, tuple(chips), (False,) * len(chips))


def judgeable_chips(
    image: LoadedImage, faces: list[Face], settings: Settings, face_models: FaceModels
) -> tuple[list[np.ndarray], list[int], dict[int, Unjudged]]:
    """The quality gate without the embedder: the aligned chips of the faces that can be judged
    (``chips[k]`` is ``faces[owner[k]]``) and why the others cannot. A clip gates every face it
    sees but embeds only each track's best few (``video``)."""
    unjudged: dict[int, Unjudged] = {}
    candidates: list[int] = []
    turned: list[int] = []  # faces lying on their side or upside down: turned upright one by one
    for i, face in enumerate(faces):
        pixels_wide = face.box.w / image.scale  # what the embedder really gets
        if image.faces_unjudgeable:
            unjudged[i] = Unjudged(ReasonCode.TOO_COMPRESSED, image.faces_unjudgeable)
        elif not is_upright(face):
            # dlib's landmarks are trained on upright faces: on a face lying on its side they land
            # anywhere and the embedding would mean nothing. The face's own region is turned upright
            # (CenterFace's eye and mouth points say how far) and found again there; if that fails,
            # it is never compared, only flagged.
            if settings.judge_turned_faces and min(face.box.w, face.box.h) / image.scale >= settings.min_face_px:
                turned.append(i)
            else:
                unjudged[i] = Unjudged(ReasonCode.TURNED, TURNED)
        elif settings.unidentifiable_below_px and face.box.w < settings.unidentifiable_below_px:
            # A district policy (off by default): faces this small identify nobody (docs/how-it-works.md,
            # "Small and blurred faces").
            why = f"face too small to identify anyone ({face.box.w:.0f} px wide; policy: unidentifiable_below_px)"
            unjudged[i] = Unjudged(ReasonCode.UNIDENTIFIABLE, why)
        elif pixels_wide < settings.min_face_px:
            why = f"face too small to check ({pixels_wide:.0f} px wide; at least {settings.min_face_px} px needed)"
            unjudged[i] = Unjudged(ReasonCode.TOO_SMALL, why)
        elif settings.hold_faces_cut_by_edge and partly_visible(face, *_page_size(image, face.page)):
            unjudged[i] = Unjudged(ReasonCode.CUT_BY_EDGE, PARTLY_VISIBLE)
        else:
            candidates.append(i)

    chips: list[np.ndarray] = []
    chip_owner: list[int] = []
    for page_index, pixels in enumerate(image.pages):
        on_page = [i for i in candidates if faces[i].page == page_index]
        if not on_page and not any(faces[i].page == page_index for i in turned):
            continue
        page_chips = face_models.aligner.chips(pixels, [faces[i] for i in on_page], image.scale) if on_page else []
        for i in (i for i in turned if faces[i].page == page_index):
            chip = turned_face_chip(pixels, faces[i], image.scale, settings, face_models)
            if chip is None:
                unjudged[i] = Unjudged(ReasonCode.TURNED, TURNED)
            else:
                on_page.append(i)
                page_chips.append(chip)
        for i, chip in zip(on_page, page_chips, strict=True):
            value = sharpness(chip)
            if value < settings.min_sharpness:
                why = f"face too blurred to check (sharpness {value:.0f}; at least {settings.min_sharpness:.0f} needed)"
                unjudged[i] = Unjudged(ReasonCode.TOO_BLURRED, why)
            else:
                chips.append(chip)
                chip_owner.append(i)
    return chips, chip_owner, unjudged
