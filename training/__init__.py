"""SSD300 training side: the model, its box math, losses, weights files and importers.

Importing this package does not import torch; the submodules that need it do.
"""
