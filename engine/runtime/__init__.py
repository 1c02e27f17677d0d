"""The torch-free runtime: detectors over ONNX Runtime and TensorRT, one interface.
Rule: never imports torch, training, engine.video or engine.export (except the PyTorch
backend, loaded only when a weights file is opened).

    from engine.runtime import open_detector
"""

from engine.runtime.detector import (
    BACKENDS,
    Detections,
    Detector,
    EngineError,
    ModelInfo,
    OnnxRuntimeDetector,
    available_backends,
    open_detector,
    read_onnx_info,
)

__all__ = [
    "BACKENDS",
    "Detections",
    "Detector",
    "EngineError",
    "ModelInfo",
    "OnnxRuntimeDetector",
    "available_backends",
    "open_detector",
    "read_onnx_info",
]
