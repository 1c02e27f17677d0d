"""Video: sources (files, cameras, URLs, GStreamer), writers and the detection log, the
overlay, and the frame pipeline. Rule: imports engine.runtime, never torch, training or
engine.export."""
