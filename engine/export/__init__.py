"""Export: ONNX export of weights files and the PyTorch backend. Rule: the only part of
engine/ that imports torch and training."""
