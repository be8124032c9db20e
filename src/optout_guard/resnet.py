"""dlib's face-recognition ResNet, rebuilt from its weights file and run by onnxruntime.

The ``dlib-bin`` wheel is built without BLAS: one 128-d descriptor costs ~80 ms there. This module
reads the *same* public-domain weights from ``dlib_face_recognition_resnet_model_v1.dat``, runs the
same network (dlib's ``anet_type``: a 29-layer ResNet on 150×150 aligned chips) in numpy as the
reference (:class:`DlibResNet`, batched matrix products), and builds from it an ONNX graph in
memory that onnxruntime runs (:class:`OnnxResNet`, ~1.5 ms per face). Both equal dlib's output to
float rounding (tests check < 1e-3 on real faces), so an index made with any of them is compatible.

The weights file is parsed, not trusted blindly: every layer's kind, shape and count must match
the known architecture, or :class:`ModelUnavailable` is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from optout_guard.errors import ModelUnavailable

# dlib's input_rgb_image_sized<150>: per-channel means (R, G, B), then divide by 256.
_MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
_LAYER_NAMES = (b"con_4", b"affine_", b"relu_", b"max_pool_2", b"avg_pool_2", b"add_prev_", b"fc_2", b"input_rgb_image_sized")


# ---- dlib's serialization format (dlib/serialize.h) -------------------------------------------
class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def int(self) -> int:
        """dlib integer: a control byte (bit 7 = negative, low 4 bits = byte count), then LE bytes."""
        control = self.data[self.pos]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def string(self) -> bytes:
        size = self.int()
        text = self.data[self.pos : self.pos + size]
        self.pos += size
        return text

    def tensor(self) -> np.ndarray:
        """dlib tensor, version 2: shape as 4 integers, then raw little-endian float32 values."""
        version = self.int()
        if version != 2:
            raise ModelUnavailable(f"unexpected dlib tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += 4 * count
        return values.reshape(shape)


@dataclass
class _Conv:
    weight: np.ndarray  # (F, C, kh, kw)
    bias: np.ndarray  # (F,)
    stride: int
    pad: int


@dataclass
class _Affine:
    gamma: np.ndarray
    beta: np.ndarray


_Pool = tuple[int, ...]  # nr, nc, stride y/x, pad y/x
_Layer = _Conv | _Affine | _Pool | None


def _parse(path: Path) -> tuple[list[tuple[bytes, _Layer]], np.ndarray]:
    """The layers, input to output, as (kind, parameters), and the final (128, in) projection."""
    data = path.read_bytes()
    reader = _Reader(data)
    layers: list[tuple[bytes, _Layer]] = []
    fc: np.ndarray | None = None
    while reader.pos < len(data):
        # Layer records start with their version string; search for the next one we know.
        # Records follow each other with only a few bytes of framing between them, so look close
        # by first (scanning the whole 22 MB file for every record would take seconds).
        window = reader.pos + 512
        starts = [(data.find(b"\x01" + bytes([len(n)]) + n, reader.pos, window), n) for n in _LAYER_NAMES]
        if all(at < 0 for at, _ in starts):
            starts = [(data.find(b"\x01" + bytes([len(n)]) + n, reader.pos), n) for n in _LAYER_NAMES]
        starts = [(at, n) for at, n in starts if at >= 0]
        if not starts:
            break
        at, name = min(starts)
        reader.pos = at
        reader.string()
        if name == b"con_4":
            params = reader.tensor().reshape(-1)
            filters, kh, kw, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(7))
            if (stride_y, pad_y, kh) != (stride_x, pad_x, kw):
                raise ModelUnavailable("non-square convolution in the embedder weights")
            channels = (params.size - filters) // (filters * kh * kw)
            weight = params[: filters * channels * kh * kw].reshape(filters, channels, kh, kw)
            layers.append((name, _Conv(weight, params[filters * channels * kh * kw :], stride_y, pad_y)))
        elif name == b"affine_":
            params = reader.tensor().reshape(-1)
            half = params.size // 2
            layers.append((name, _Affine(params[:half], params[half:])))
        elif name in (b"max_pool_2", b"avg_pool_2"):
            layers.append((name, tuple(reader.int() for _ in range(6))))  # nr, nc, stride y/x, pad y/x
        elif name == b"fc_2":
            outputs, inputs = reader.int(), reader.int()
            fc = reader.tensor().reshape(-1)[: inputs * outputs].reshape(inputs, outputs)
        elif name == b"input_rgb_image_sized":
            pass
        else:
            layers.append((name, None))
    if fc is None:
        raise ModelUnavailable("no projection layer found in the embedder weights")
    counts = {n: sum(1 for k, _ in layers if k == n) for n in (b"con_4", b"affine_", b"relu_", b"add_prev_", b"avg_pool_2")}
    expected = {b"con_4": 29, b"affine_": 29, b"relu_": 29, b"add_prev_": 14, b"avg_pool_2": 5}
    if counts != expected or fc.shape != (256, 128):
        raise ModelUnavailable(f"the embedder weights do not have dlib's ResNet layout ({counts}, fc {fc.shape})")
    return layers, fc


# ---- the forward pass, batched, NCHW float32 -------------------------------------------------
def _conv(x: np.ndarray, layer: _Conv) -> np.ndarray:
    f, c, k, _ = layer.weight.shape
    if layer.pad:
        x = np.pad(x, ((0, 0), (0, 0), (layer.pad, layer.pad), (layer.pad, layer.pad)))
    # dlib's output size: 1 + (in + 2·pad − k) // stride, so trailing rows/columns may be unused.
    windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, :: layer.stride, :: layer.stride]
    n, _, oh, ow = windows.shape[:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
    out = cols @ layer.weight.reshape(f, c * k * k).T + layer.bias
    return np.ascontiguousarray(out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2))


def _pool(x: np.ndarray, params: tuple[int, ...], kind: bytes) -> np.ndarray:
    nr, nc, stride, _, pad, _ = params
    if nr == 0:  # avg_pool_everything
        return x.mean(axis=(2, 3), keepdims=True)
    if pad:
        fill = -np.inf if kind == b"max_pool_2" else 0.0
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    windows = sliding_window_view(x, (nr, nc), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(4, 5)) if kind == b"max_pool_2" else windows.mean(axis=(4, 5))


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: tensors of different sizes are added where they overlap, zero elsewhere."""
    if a.shape == b.shape:
        return a + b
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True))
    out = np.zeros(shape, np.float32)
    out[tuple(slice(0, s) for s in a.shape)] += a
    out[tuple(slice(0, s) for s in b.shape)] += b
    return out


class DlibResNet:
    """Embeds aligned 150×150 RGB chips: ``(N, 150, 150, 3) uint8 -> (N, 128) float32``."""

    def __init__(self, weights: Path) -> None:
        try:
            self.layers, self.fc = _parse(weights)
        except (IndexError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"cannot read the embedder weights {weights} ({exc}); reinstall the model packages") from None

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        x = (np.asarray(chips, np.float32) - _MEAN_RGB) / 256.0
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        # Residual wiring of dlib's anet_type: a residual block starts after the max pool or after
        # the relu that follows an add_prev, and ends at the next add_prev. A downsampling block's
        # shortcut is its input average-pooled (the 2×2 avg_pool_2 just before that add_prev).
        block_input = x
        previous = b""
        for kind, params in self.layers:
            if kind == b"con_4":
                assert isinstance(params, _Conv)
                x = _conv(x, params)
            elif kind == b"affine_":
                assert isinstance(params, _Affine)
                x = x * params.gamma[None, :, None, None] + params.beta[None, :, None, None]
            elif kind == b"relu_":
                x = np.maximum(x, 0.0)
                if previous == b"add_prev_":
                    block_input = x
            elif kind == b"max_pool_2":
                assert isinstance(params, tuple)
                x = _pool(x, params, kind)
                block_input = x
            elif kind == b"avg_pool_2":
                assert isinstance(params, tuple)
                if params[0] == 0:  # avg_pool_everything: the end of the network
                    x = _pool(x, params, kind)
                else:
                    block_input = _pool(block_input, params, kind)
            elif kind == b"add_prev_":
                x = _add(x, block_input)
            previous = kind
        return (x.reshape(x.shape[0], -1) @ self.fc).astype(np.float32)


# ---- the same network as an ONNX graph, run by onnxruntime ----------------------------------------
def _window_shape(shape: tuple[int, ...], channels: int, k: int, stride: int, pad: int) -> tuple[int, ...]:
    """Output shape of a k×k convolution or pool in dlib: 1 + (in + 2·pad − k) // stride."""
    n, _, h, w = shape
    return (n, channels, 1 + (h + 2 * pad - k) // stride, 1 + (w + 2 * pad - k) // stride)


def to_onnx(net: DlibResNet) -> bytes:
    """The parsed network as an ONNX model (built in memory, never written to disk): the layers
    above, one node each, with dlib's shape rules made explicit (an ``add_prev`` of unequal tensors
    pads both with zeros to the larger shape, as :func:`_add` does). Input: the normalised
    (N, 3, 150, 150) float32 batch of :meth:`DlibResNet.__call__`; output: (N, 128)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    constants: list = []
    count = iter(range(10_000))

    def const(value: np.ndarray) -> str:
        name = f"c{next(count)}"
        constants.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"t{next(count)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def padded(name: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
        if shape == target:
            return name
        pads = [0] * len(shape) + [t - s for s, t in zip(shape, target, strict=True)]  # zeros after, per axis
        return node("Pad", [name, const(np.array(pads, np.int64))], mode="constant")

    # Shapes follow dlib's rules, worked out without running anything (running the numpy network
    # on a dummy chip to learn them cost ~0.5 s of every start-up): a convolution or pool gives
    # 1 + (in + 2·pad − k) // stride, an add_prev the larger of its two inputs.
    x_shape: tuple[int, ...] = (1, 3, 150, 150)
    x, block_input, block_shape = "input", "input", x_shape
    previous = b""
    for kind, params in net.layers:
        if kind == b"con_4":
            assert isinstance(params, _Conv)
            k = params.weight.shape[2]
            x = node("Conv", [x, const(params.weight), const(params.bias)], kernel_shape=[k, k],
                     strides=[params.stride] * 2, pads=[params.pad] * 4)  # fmt: skip
            x_shape = _window_shape(x_shape, params.weight.shape[0], k, params.stride, params.pad)
        elif kind == b"affine_":
            assert isinstance(params, _Affine)
            x = node("Add", [node("Mul", [x, const(params.gamma[:, None, None])]), const(params.beta[:, None, None])])
        elif kind == b"relu_":
            x = node("Relu", [x])
            if previous == b"add_prev_":
                block_input, block_shape = x, x_shape
        elif kind in (b"max_pool_2", b"avg_pool_2"):
            assert isinstance(params, tuple)
            nr, _nc, stride, _, pad, _ = params
            if kind == b"avg_pool_2" and nr == 0:  # avg_pool_everything: the end of the network
                x = node("GlobalAveragePool", [x])
                x_shape = (*x_shape[:2], 1, 1)
            else:
                op, attrs = ("MaxPool", {}) if kind == b"max_pool_2" else ("AveragePool", {"count_include_pad": 1})
                source = x if kind == b"max_pool_2" else block_input
                pooled = node(op, [source], kernel_shape=[nr, nr], strides=[stride] * 2, pads=[pad] * 4, **attrs)
                if kind == b"max_pool_2":
                    x, x_shape = pooled, _window_shape(x_shape, x_shape[1], nr, stride, pad)
                    block_input, block_shape = x, x_shape
                else:
                    block_input = pooled
                    block_shape = _window_shape(block_shape, block_shape[1], nr, stride, pad)
        elif kind == b"add_prev_":
            target = tuple(max(p, q) for p, q in zip(x_shape, block_shape, strict=True))
            x = node("Add", [padded(x, x_shape, target), padded(block_input, block_shape, target)])
            x_shape = target
        previous = kind
    flat = node("Flatten", [x], axis=1)
    nodes.append(helper.make_node("MatMul", [flat, const(net.fc.astype(np.float32))], ["embedding"]))
    graph = helper.make_graph(
        nodes,
        "dlib_resnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 150, 150])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 128])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what onnxruntime 1.20+ reads
    return bytes(model.SerializeToString())


class OnnxResNet:
    """:class:`DlibResNet` run by onnxruntime: the same weights and layers, the same output (a test
    compares them on real faces: < 1e-5), 11× faster (26 faces of a class photo: 0.04 s instead of
    0.44 s on 2 cores; scripts/benchmark_speed.py)."""

    def __init__(self, weights: Path) -> None:
        from optout_guard.onnx_graphs import onnx_session, session_options

        options = session_options()
        # Built from the parsed weights (dropped once in the graph), or the same graph from the cache.
        self.session = onnx_session("dlib-resnet", weights, lambda: to_onnx(DlibResNet(weights)), options)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        x = (np.asarray(chips, np.float32) - _MEAN_RGB) / 256.0
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return np.asarray(self.session.run(["embedding"], {"input": x})[0], np.float32)
