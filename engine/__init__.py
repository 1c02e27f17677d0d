"""Deployment engine: ONNX export, TensorRT engine building and the runtime detectors.

Import rules: the export and build side may import `training`; the runtime side (what
`app/` and the video command use) must not import torch, so that it runs on a Jetson
with TensorRT, cuda-python, numpy and OpenCV only.
"""
