"""Deployment engine, in three parts, and the command line that wires everything.

- engine.runtime: the detector interface and its backends (ONNX Runtime, TensorRT), the
  platform and model lookup. Never imports torch or training (beyond the torch-free
  training.boxes and training.fileio): it runs on a Jetson with TensorRT, cuda-python,
  numpy and OpenCV only.
- engine.video: sources (files, cameras, URLs, GStreamer), the frame pipeline shared by the
  video command and the GUI, writers, the recorder, the detection log and the overlay. The
  same rule as the runtime.
- engine.export: ONNX export and the PyTorch backend, the only part that imports torch and
  training.
- engine.commands: every subcommand of main.py but `gui` (app.command).
"""
