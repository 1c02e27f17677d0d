"""The PyTorch backend: a weights file run eagerly on CPU or CUDA, NMS on the same device.

Imports torch and training; only loaded when this backend is chosen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.runtime.detector import Detector, EngineError, ModelInfo
from training.postprocess import PostProcessor
from training.weights import load_detector


class TorchDetector(Detector):
    """SSD300 in PyTorch with the same fixed outputs as the exported graphs.

    Args:
        device: 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'.
        score_threshold, iou_threshold, top_k: as the export options.
        half: FP16 on CUDA (default: on for CUDA).
        max_batch: frames per forward pass in detect_batch.
        channels_last: NHWC memory for the convolutions (faster on CPUs and tensor cores).
    """

    backend = "torch"

    def __init__(
        self,
        weights: str | Path,
        device: str = "auto",
        score_threshold: float = 0.3,
        iou_threshold: float = 0.45,
        top_k: int = 100,
        half: bool | None = None,
        max_batch: int = 8,
        channels_last: bool = True,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("device cuda asked for, but torch sees no CUDA device")
        self.torch_device = torch.device(device)
        model = load_detector(weights, device=self.torch_device)
        self.half = (self.torch_device.type == "cuda") if half is None else half
        if self.half:
            model = model.half()
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(memory_format=layout).eval()
        self.channels_last = channels_last
        self.post = PostProcessor(model.coder, score_threshold, iou_threshold, top_k)
        self.top_k = top_k
        self.max_batch = max_batch
        info = ModelInfo(
            list(model.spec.class_names),
            model.spec.input_size,
            top_k,
            score_threshold,
            iou_threshold,
            tail="torch",
            precision="fp16" if self.half else "fp32",
        )
        layout_name = "channels-last" if channels_last else "NCHW"
        super().__init__(info, f"{self.torch_device} ({layout_name}, {info.precision})")

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray):
        x = torch.from_numpy(batch).to(self.torch_device, non_blocking=True)
        x = x.flip(-1).permute(0, 3, 1, 2)  # BGR NHWC -> RGB NCHW (channels-last memory)
        x = x.half() if self.half else x.float()
        if not self.channels_last:
            x = x.contiguous()
        loc, conf = self.model(x)
        dets = self.post(loc.float(), conf.float(), self.model.priors.float())
        b, k = len(dets), self.top_k
        num = np.zeros((b, 1), np.int32)
        boxes = np.zeros((b, k, 4), np.float32)
        scores = np.zeros((b, k), np.float32)
        classes = np.zeros((b, k), np.int32)
        for i, d in enumerate(dets):
            n = len(d.scores)
            num[i, 0] = n
            boxes[i, :n] = d.boxes.cpu().numpy()
            scores[i, :n] = d.scores.cpu().numpy()
            classes[i, :n] = d.labels.cpu().numpy()
        return num, boxes, scores, classes

    def close(self) -> None:
        self.model = None
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()
