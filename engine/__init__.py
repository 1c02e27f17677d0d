"""Deployment engine, in three parts, plus the command modules at this level.

- engine.runtime: the detector interface and its backends (ONNX Runtime, TensorRT), the
  platform and model lookup. Never imports torch or training: it runs on a Jetson with
  TensorRT, cuda-python, numpy and OpenCV only.
- engine.video: sources (files, cameras, URLs, GStreamer), writers, the detection log, the
  overlay and the frame pipeline. Never imports torch or training either.
- engine.export: ONNX export and the PyTorch backend, the only part that imports torch and
  training.

The modules at this level (commands, video_command, bench, system, demo) wire the
command line to those parts.
"""
