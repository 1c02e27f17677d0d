"""One detector interface over TensorRT, ONNX Runtime and PyTorch.

    with open_detector("model.onnx") as det:          # best backend available
        result = det.detect(frame)                     # a BGR frame of any size
        for box, score, name in zip(result.boxes, result.scores, result.names): ...

This module and the ONNX Runtime backend do not import torch (the GUI and the Jetson deploy
path rely on that); the PyTorch and TensorRT backends are imported only when chosen.
Every backend returns the same Detections: boxes in pixels of the original frame, found by
resizing the whole frame to the network input (no letterbox, as in training) and scaling
the normalized boxes back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.runtime import contract as C

BACKENDS = ("tensorrt", "onnxruntime", "torch")


class EngineError(Exception):
    """A model file or backend that cannot be used, with what to do about it (main.py prints
    it on one line)."""


@dataclass
class Detections:
    """Detections of one frame, by descending score.

    boxes: float32 [K, 4] (x1, y1, x2, y2) in pixels of the frame; scores: float32 [K];
    class_ids: int32 [K], 1..C-1; names: the class name of each detection.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


@dataclass
class ModelInfo:
    """What the runtime needs to know about an exported model (from the ONNX metadata)."""

    class_names: list[str]
    input_size: int = 300
    top_k: int = 100
    score_threshold: float = 0.3
    iou_threshold: float = 0.45
    tail: str = "onnx"
    precision: str = "fp32"
    # INT8 exports: the runtime the integers suit ("onnxruntime" or "tensorrt"), else None
    quantized_for: str | None = None

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> ModelInfo:
        if meta.get(C.META_FORMAT) != C.FORMAT:
            raise EngineError(
                f"{source}: not an SSD300 ONNX exported by this project (no {C.META_FORMAT} "
                "metadata); export one with `main.py export WEIGHTS`"
            )
        try:
            spec = json.loads(meta[C.META_SPEC])
            return cls(
                class_names=json.loads(meta[C.META_CLASSES]),
                input_size=int(spec.get("input_size", 300)),
                top_k=int(meta[C.META_TOP_K]),
                score_threshold=float(meta[C.META_SCORE]),
                iou_threshold=float(meta[C.META_IOU]),
                tail=meta[C.META_TAIL],
                precision=meta.get(C.META_PRECISION, "fp32"),
                quantized_for=_quantized_for(meta),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise EngineError(f"{source}: incomplete SSD300 metadata ({e!r})") from None


def _quantized_for(meta: dict[str, str]) -> str | None:
    if meta.get(C.META_PRECISION) != "int8":
        return None
    try:
        target = json.loads(meta.get(C.META_CALIBRATION, "{}")).get("target")
    except (ValueError, AttributeError):
        target = None
    return target if isinstance(target, str) else "unknown"


def read_onnx_info(path: str | Path) -> ModelInfo:
    """ModelInfo of an exported ONNX file, read without loading its weights."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise EngineError(f"model not found: {p}")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, ... for foreign files
        raise EngineError(f"{p}: not a readable ONNX file ({type(e).__name__})") from None
    return ModelInfo.from_metadata({x.key: x.value for x in m.metadata_props}, str(p))


class Detector:
    """Base class: pre-processing, mapping back and the common call.

    Subclasses implement `_infer(batch)` for a uint8 [B, S, S, 3] BGR batch, returning the
    fixed outputs (num [B, 1], boxes [B, K, 4] normalized, scores [B, K], classes [B, K]).
    A detector may be created in one thread and used in another, but calls are serialized.
    """

    backend = "base"
    max_batch = 1

    def __init__(self, info: ModelInfo, device: str) -> None:
        self.info = info
        self.device = device
        self.class_names = list(info.class_names)
        self.input_size = info.input_size
        self._lock = threading.Lock()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the backend's resources (device memory, sessions)."""

    def describe(self) -> str:
        return f"{self.backend} on {self.device}"

    def preprocess(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """BGR frame [H, W, 3] uint8 -> [S, S, 3] uint8, resized like training (no letterbox)."""
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            shape = None if frame is None else (frame.shape, frame.dtype)
            raise EngineError(f"expected a BGR uint8 frame [H, W, 3], got {shape}")
        s = self.input_size
        return cv2.resize(frame, (s, s), dst=out, interpolation=cv2.INTER_LINEAR)

    def detect(
        self,
        frame: np.ndarray,
        score_threshold: float | None = None,
        classes: Sequence[int] | None = None,
    ) -> Detections:
        """Detections in `frame` (BGR), optionally above a higher score threshold than the
        export's, and only of the given class ids."""
        return self.detect_batch([frame], score_threshold, classes)[0]

    def detect_batch(self, frames, score_threshold=None, classes=None) -> list[Detections]:
        frames = list(frames)
        out: list[Detections] = []
        for start in range(0, len(frames), self.max_batch):
            chunk = frames[start : start + self.max_batch]
            batch = np.stack([self.preprocess(f) for f in chunk])
            num, boxes, scores, cls = self.run(batch)
            for i, f in enumerate(chunk):
                out.append(
                    self.to_detections(
                        num[i], boxes[i], scores[i], cls[i], f.shape, score_threshold, classes
                    )
                )
        return out

    def run(self, batch: np.ndarray):
        """The raw outputs for a preprocessed uint8 [B, S, S, 3] BGR batch (B <= max_batch):
        num [B, 1], boxes [B, K, 4] normalized, scores [B, K], class ids [B, K]. For
        pipelines that resize frames on another thread; pass each row to to_detections."""
        with self._lock:
            return self._infer(batch)

    def to_detections(
        self, num, boxes, scores, classes, frame_shape, score_threshold=None, keep_classes=None
    ) -> Detections:
        """The first `num` rows, filtered, scaled to the frame and clipped to it."""
        n = int(np.asarray(num).reshape(-1)[0])
        b = np.asarray(boxes[:n], np.float32)
        s = np.asarray(scores[:n], np.float32)
        c = np.asarray(classes[:n], np.int32)
        keep = np.ones(n, bool)
        if score_threshold is not None:
            keep &= s >= score_threshold
        if keep_classes is not None:
            keep &= np.isin(c, np.asarray(list(keep_classes), np.int32))
        h, w = frame_shape[:2]
        b = np.clip(b[keep], 0.0, 1.0) * np.float32([w, h, w, h])
        c = c[keep]
        names = [self.class_names[i - 1] if 0 < i <= len(self.class_names) else str(i) for i in c]
        return Detections(b, s[keep], c, names)

    def _infer(self, batch: np.ndarray):
        raise NotImplementedError


class OnnxRuntimeDetector(Detector):
    """ONNX Runtime on the CPU, or on its CUDA provider when present (device 'cuda' or 'auto')."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("onnxruntime is not installed (pip install onnxruntime)") from None
        info = read_onnx_info(path)
        if info.tail != "onnx":
            raise EngineError(
                f"{path}: uses TensorRT's EfficientNMS_TRT plugin, which runs only in TensorRT; "
                "for ONNX Runtime export with `--nms onnx`"
            )
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise EngineError("device cuda asked for, but onnxruntime has no CUDA provider here")
        use_cuda = device in ("cuda", "auto") and "CUDAExecutionProvider" in available
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime's own exception types vary by version
            raise EngineError(
                f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})"
            ) from None
        super().__init__(info, "cuda" if use_cuda else "cpu")

    def _infer(self, batch: np.ndarray):
        outs = self.session.run(list(C.OUTPUTS), {C.INPUT: batch})
        return outs

    def close(self) -> None:
        self.session = None


def _is_weights(path: Path) -> bool:
    return path.suffix == ".safetensors"


def available_backends() -> list[str]:
    """Backends whose libraries import here, best first."""
    import importlib.util

    def present(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    found = []
    if present("tensorrt") and present("cuda"):
        found.append("tensorrt")
    if present("onnxruntime"):
        found.append("onnxruntime")
    if present("torch"):
        found.append("torch")
    return found


def open_detector(
    model: str | Path,
    backend: str = "auto",
    device: str = "auto",
    **options,
) -> Detector:
    """A Detector for a model file, on the named backend or the best available one.

    model: an exported .onnx, a TensorRT engine (.engine/.plan), or a .safetensors weights
        file (PyTorch backend; for the others export it first with `main.py export`).
    backend: 'auto', 'tensorrt', 'onnxruntime' or 'torch'. 'auto' picks TensorRT for ONNX
        and engines when TensorRT and a GPU are there, else ONNX Runtime; PyTorch for weights.
    options: passed to the backend (e.g. score_threshold and top_k for PyTorch, workspace
        and cache_dir for TensorRT builds).
    """
    path = Path(model)
    if not path.exists():
        raise EngineError(f"model not found: {path}")
    if backend not in ("auto", *BACKENDS):
        raise EngineError(
            f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}"
        )
    is_engine = path.suffix in (".engine", ".plan", ".trt")
    if backend == "auto":
        if _is_weights(path):
            backend = "torch"
        elif is_engine or (
            "tensorrt" in available_backends()
            and device != "cpu"
            and read_onnx_info(path).quantized_for in (None, "tensorrt")
        ):  # an INT8 ONNX quantized for ONNX Runtime has unsigned integers TensorRT refuses
            backend = "tensorrt"
        else:
            backend = "onnxruntime"
    if backend == "torch":
        if not _is_weights(path):
            raise EngineError(f"{path}: the PyTorch backend runs .safetensors weights files")
        try:
            from engine.export.torch_backend import TorchDetector
        except ImportError as e:
            raise EngineError(
                f"{path}: running a weights file needs PyTorch ({e}); export it to ONNX "
                "on a machine with PyTorch (`main.py export`) and use the .onnx here"
            ) from None
        return TorchDetector(path, device=device, **options)
    if _is_weights(path):
        raise EngineError(
            f"{path}: a weights file; export it first (`main.py export {path}`) to run it "
            f"with {backend}, or use --backend torch"
        )
    if backend == "onnxruntime":
        if is_engine:
            raise EngineError(f"{path}: a TensorRT engine runs only with the tensorrt backend")
        return OnnxRuntimeDetector(path, device=device, **options)
    from engine.runtime.tensorrt_backend import TensorRTDetector

    return TensorRTDetector(path, **options)
