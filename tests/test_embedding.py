"""The numpy ResNet must give dlib's own embeddings (same weights, same network)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import LFW
from optout_guard.config import Settings
from optout_guard.detection import detect_faces
from optout_guard.embedding import embed_chips
from optout_guard.errors import ModelUnavailable
from optout_guard.face_models import DlibAligner, ResNetEncoder
from optout_guard.media.photos import load_image
from optout_guard.resnet import DlibResNet


def chips_of(paths, models):
    settings = Settings()
    chips = []
    for path in paths:
        image = load_image(path, settings)
        faces = detect_faces(image, settings, models)
        chips += DlibAligner().chips(image.pages[0], faces, image.scale)
    return chips


def dlib_reference(chips, models) -> np.ndarray:
    return np.array([np.asarray(v) for v in models.embedder.compute_face_descriptor(chips)], np.float32)


def test_matches_dlib_on_package_portraits(samples, models):
    chips = chips_of([samples["grace_hopper"], samples["astronaut"]], models)
    assert len(chips) == 2
    ours = embed_chips(chips, ResNetEncoder(models))
    assert ours.shape == (2, 128) and ours.dtype == np.float32
    assert np.abs(ours - dlib_reference(chips, models)).max() < 1e-3


def test_matches_dlib_on_real_faces_in_batches(data_dir, models):
    paths = [sorted((LFW / name).glob("*.jpg"))[0] for name in ("Hugo_Chavez", "Colin_Powell", "Serena_Williams", "Jackie_Chan")]
    paths += [data_dir / "dlib_examples" / "examples" / "faces" / "2008_002506.jpg"]  # three faces
    chips = chips_of(paths, models)
    assert len(chips) >= 7
    chips = chips * 3  # more than one batch of 16
    ours = embed_chips(chips, ResNetEncoder(models))
    assert np.abs(ours - dlib_reference(chips, models)).max() < 1e-3


def test_rejects_a_file_that_is_not_the_resnet(tmp_path):
    bogus = tmp_path / "model.dat"
    bogus.write_bytes(b"\x01\x05con_4" + b"\x00" * 100)
    with pytest.raises(ModelUnavailable):
        DlibResNet(bogus)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(b"\x01\x05con_4\x01\x02\x01\x40\x01\x01\x01\x01\x01\x01" + b"\x00" * 10)
    with pytest.raises(ModelUnavailable):
        DlibResNet(truncated)


def test_one_centerface_session_serves_every_input_size_as_opencv_would(samples, models):
    """Detection reuses one onnxruntime session across sizes: its output must equal a fresh
    session's, and match OpenCV's DNN on the same file (what the product ran before) to float
    rounding — the runtime changed, not the detector."""
    import cv2

    from optout_guard.models import CENTERFACE_FILE, CenterFaceNet, model_path

    image = load_image(samples["astronaut"], Settings()).pages[0]
    opencv = cv2.dnn.readNetFromONNX(str(model_path(CENTERFACE_FILE)))
    for width, height in ((512, 512), (320, 224), (512, 512), (1024, 768)):
        blob = cv2.dnn.blobFromImage(image, 1.0, (width, height), (0, 0, 0), swapRB=False)
        shared = models.centerface(blob)
        fresh = CenterFaceNet(model_path(CENTERFACE_FILE))(blob)
        assert all(np.array_equal(a, b) for a, b in zip(shared, fresh, strict=True))
        opencv.setInput(blob)
        before = opencv.forward(list(CenterFaceNet.OUTPUTS))
        assert [a.shape for a in shared] == [b.shape for b in before]
        assert max(float(np.abs(a - b).max()) for a, b in zip(shared, before, strict=True)) < 1e-3


def test_the_onnx_graph_is_the_numpy_network(data_dir, models):
    """The product embeds with onnxruntime (resnet.OnnxResNet); the graph is built from the numpy
    network (resnet.DlibResNet), which must give the same numbers on real faces and batch sizes."""
    from optout_guard.models import EMBEDDER_FILE, model_path

    paths = [sorted((LFW / name).glob("*.jpg"))[0] for name in ("Hugo_Chavez", "Colin_Powell", "Serena_Williams")]
    chips = np.stack(chips_of(paths, models))
    reference = DlibResNet(model_path(EMBEDDER_FILE))
    for batch in (chips[:1], chips):
        assert np.abs(models.resnet(batch) - reference(batch)).max() < 1e-5


def _graph_files(folder):
    return sorted(p for p in folder.glob("dlib-resnet-*.onnx"))


def test_the_cached_graph_is_checked_before_it_is_run(samples, models, tmp_path, monkeypatch):
    """The optimised ResNet graph is kept between processes (issue 30); the one read back must give the
    numbers the freshly built one gives, and a graph whose bytes no longer match their recorded
    sha256 (half-written, altered) is rebuilt, never run."""
    from optout_guard.models import EMBEDDER_FILE, model_path
    from optout_guard.resnet import OnnxResNet

    monkeypatch.setenv("OPTOUT_GUARD_CACHE_DIR", str(tmp_path / "cache"))
    chips = np.stack(chips_of([samples["grace_hopper"], samples["astronaut"]], models))
    reference = DlibResNet(model_path(EMBEDDER_FILE))(chips)
    built = OnnxResNet(model_path(EMBEDDER_FILE))
    [graph] = _graph_files(tmp_path / "cache")
    assert graph.stat().st_mode & 0o077 == 0  # private, like everything the product keeps
    cached = OnnxResNet(model_path(EMBEDDER_FILE))
    for net in (built, cached):
        assert np.abs(net(chips) - reference).max() < 1e-5

    # Tamper: a graph whose output is all zeros, under the cache's name. It must not be used.
    from onnx import TensorProto, helper

    zeros = helper.make_model(
        helper.make_graph(
            [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "z"], ["m0"]),
             helper.make_node("Expand", ["m0", "shape"], ["embedding"])],
            "tampered",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 150, 150])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 128])],
            [helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("shape", TensorProto.INT64, [2], [1, 128])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    zeros.ir_version = 8
    graph.write_bytes(zeros.SerializeToString())
    rebuilt = OnnxResNet(model_path(EMBEDDER_FILE))
    assert np.abs(rebuilt(chips) - reference).max() < 1e-5
    [graph] = _graph_files(tmp_path / "cache")  # and the cache holds the real graph again
    assert np.abs(OnnxResNet(model_path(EMBEDDER_FILE))(chips) - reference).max() < 1e-5


def test_a_cache_that_cannot_be_written_costs_only_the_build(samples, models, tmp_path, monkeypatch):
    from optout_guard.models import EMBEDDER_FILE, model_path
    from optout_guard.resnet import OnnxResNet

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("OPTOUT_GUARD_CACHE_DIR", str(blocker / "cache"))
    chips = np.stack(chips_of([samples["grace_hopper"]], models))
    net = OnnxResNet(model_path(EMBEDDER_FILE))
    assert np.abs(net(chips) - DlibResNet(model_path(EMBEDDER_FILE))(chips)).max() < 1e-5


def test_the_tests_memo_of_the_models_keys_on_all_that_detection_reads(samples):
    """``tests/memo_models.py`` (many tests enroll the same photos) keys a detection on the pixels,
    their scale and the settings ``detection.py`` reads: if it read another, a test could be
    handed another test's faces. And what it hands back is what the models give."""
    import ast
    import inspect

    import optout_guard.detection as detection
    from memo_models import MemoDetector, MemoEncoder
    from optout_guard.face_models import get_face_models
    from optout_guard.models import get_models

    tree = ast.parse(inspect.getsource(detection))
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and getattr(n.value, "id", "") == "settings"}
    assert read == {"detector", "detection_threshold", "detect_min_face_px"}
    image = load_image(samples["grace_hopper"], Settings())
    real, detector, encoder = get_face_models(), MemoDetector(get_models()), MemoEncoder(get_models())
    for settings in (Settings(), Settings(detection_threshold=0.9), Settings(detect_min_face_px=60), Settings()):
        want = real.detector.detect(image, settings)
        got = detector.detect(image, settings)
        assert [(f.box, f.score) for f in got] == [(f.box, f.score) for f in want]
        if want:
            chips = np.stack(real.aligner.chips(image.pages[0], want, image.scale))
            assert np.array_equal(encoder.encode(chips), real.encoder.encode(chips))
    assert len(detector.memo) == 3 and len(encoder.memo) >= 1  # each setting a detection of its own


def test_a_model_file_is_hashed_once_even_when_two_threads_ask_at_once(tmp_path, monkeypatch):
    """Issue 30: the ResNet's weights key its graph (one loading thread) and the index's fingerprint
    (another): the second waits for the first's hash instead of reading the 21 MB again."""
    import threading
    import time

    from optout_guard import onnx_graphs

    weights = tmp_path / "weights.dat"
    weights.write_bytes(b"w" * 1000)
    hashed: list[object] = []
    release = threading.Event()

    def slow_hash(path):
        hashed.append(path)
        release.wait(5)
        return "digest"

    monkeypatch.setattr(onnx_graphs, "sha256_file", slow_hash)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(onnx_graphs.file_sha256(weights))) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # both threads are asking now
    release.set()
    for thread in threads:
        thread.join(5)
    assert hashed == [weights] and got == ["digest", "digest"]


def test_a_part_look_finds_a_face_as_a_whole_look_does(samples, models):
    """A clip's sample looks only at what changed and around known faces (``detect_faces_in``): each
    part at the whole frame's scale, so a face gets about the box and landmarks a whole look gives it. A
    part that cuts a face is looked at again, grown around it; a part with no face finds none; a
    picture larger than one tile is looked at whole (None)."""
    from optout_guard.detection import detect_faces_in
    from optout_guard.types import Box, LoadedImage

    settings = Settings()
    frame = np.full((720, 1280, 3), 90, np.uint8)  # a working-size clip frame
    for name, x in (("grace_hopper", 100), ("astronaut", 800)):
        photo = load_image(samples[name], settings).pages[0]
        side = 300 / max(photo.shape[:2])
        import cv2

        small = cv2.resize(photo, (round(photo.shape[1] * side), round(photo.shape[0] * side)), interpolation=cv2.INTER_AREA)
        frame[200 : 200 + small.shape[0], x : x + small.shape[1]] = small
    image = LoadedImage("", "0" * 64, "clip", (1920, 1080), (frame,), 1.5)
    whole = detect_faces(image, settings, models)
    assert len(whole) == 2
    parts = [Box(f.box.x / 1.5 - 60, f.box.y / 1.5 - 60, f.box.w / 1.5 + 120, f.box.h / 1.5 + 120) for f in whole]
    found = detect_faces_in(image, parts, settings, models)
    assert found is not None and len(found) == 2
    for a, b in zip(sorted(whole, key=lambda f: f.box.x), sorted(found, key=lambda f: f.box.x), strict=True):
        # CenterFace's box moves a little with what else it sees (as from one frame to the next).
        size = max(a.box.w, a.box.h)
        assert max(abs(a.box.x - b.box.x), abs(a.box.y - b.box.y), abs(a.box.w - b.box.w), abs(a.box.h - b.box.h)) < 0.12 * size
        assert float(np.abs(a.landmarks - b.landmarks).max()) < 0.06 * size
        assert a.box.iou(b.box) > 0.8
    first = sorted(whole, key=lambda f: f.box.x)[0]
    near = first.box.scaled(1 / 1.5)
    cut = Box(near.x + near.w / 2, near.y - 40, near.w + 80, near.h + 80)  # the face's right half
    again = detect_faces_in(image, [cut], settings, models)  # looked at again, grown around the face
    assert again is not None and len(again) == 1 and again[0].box.iou(first.box) > 0.8
    assert detect_faces_in(image, [Box(500, 20, 200, 150)], settings, models) == []
    large = LoadedImage("", "0" * 64, "photo", (4000, 3000), (np.zeros((3000, 4000, 3), np.uint8),), 1.0)
    assert detect_faces_in(large, [Box(0, 0, 100, 100)], settings, models) is None  # more than a tile: whole
