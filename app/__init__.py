"""PyQt5 desktop application for live detection.

Import rules: imports `engine`'s runtime only; never `training` and never torch.
"""
