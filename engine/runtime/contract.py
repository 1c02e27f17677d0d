"""What an exported SSD300 ONNX graph looks like: names shared by the exporter (torch side)
and the runtimes (torch-free). No torch, no onnx import here."""

from __future__ import annotations

FORMAT = "ssd300-onnx/1"
INPUT = "images"  # uint8 [1, 300, 300, 3], BGR, as cv2.resize gives it
# Fixed-size outputs of both NMS tails; rows past num_detections are padding (zeros).
NUM_DETECTIONS = "num_detections"  # int32 [1, 1]
BOXES = "boxes"  # float32 [1, K, 4], normalized (x1, y1, x2, y2)
SCORES = "scores"  # float32 [1, K]
CLASSES = "classes"  # int32 [1, K], class ids 1..C-1 (0 is background)
OUTPUTS = (NUM_DETECTIONS, BOXES, SCORES, CLASSES)
TAILS = ("onnx", "efficientnms")
# Metadata keys (onnx metadata_props).
META_FORMAT = "ssd300.format"
META_CLASSES = "ssd300.class_names"
META_SPEC = "ssd300.spec"
META_TAIL = "ssd300.nms"
META_TOP_K = "ssd300.top_k"
META_SCORE = "ssd300.score_threshold"
META_IOU = "ssd300.iou_threshold"
META_PRECISION = "ssd300.precision"  # fp32, fp16 or int8
# INT8 exports: JSON {images, source, method, target}; target is the runtime the integers
# suit: "onnxruntime" (unsigned activations) or "tensorrt" (signed symmetric Q/DQ).
META_CALIBRATION = "ssd300.calibration"
# Nodes of the conv4_3 L2 normalization carry this name prefix, so a TensorRT builder can
# keep them in FP32.
L2NORM_PREFIX = "l2norm/"
# Nodes outside the network (input conversion, softmax, decoding) carry this prefix and the
# NMS tail's nodes "nms/": an FP16 TensorRT build keeps all three groups in FP32.
FP32_PREFIX = "fp32/"
NMS_PREFIX = "nms/"
