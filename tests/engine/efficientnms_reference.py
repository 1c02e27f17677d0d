"""Sequential NumPy reference of NVIDIA's EfficientNMS_TRT plugin (batch size 1).

Source mirrored (NVIDIA/TensorRT git mirror, no work tree):
  * plugin/efficientNMSPlugin/efficientNMSInference.cu   (kernels)      -- cited as  .cu:LINE
  * plugin/efficientNMSPlugin/efficientNMSInference.cuh  (box structs)  -- cited as  .cuh:LINE
  * plugin/efficientNMSPlugin/efficientNMSPlugin.cpp     (plugin glue)  -- cited as  .cpp:LINE
  * plugin/efficientNMSPlugin/efficientNMSParameters.h   (defaults)     -- cited as  Params.h:LINE
  * plugin/efficientNMSPlugin/README.md   -- cited as  README.md:LINE (release/8.5 numbering)
Line numbers are those of branch `main` (identical to release/10.3 for .cu/.cuh); the
release/8.5 line, where different, is given as "8.5:LINE".  The only behavioural
difference between release/8.5 and main is `class_agnostic` (absent in 8.5, where the
class-equality test is unconditional, 8.5 .cu:322; added in 8.6, main .cu:317-321).

Conventions (what the CUDA code really does):
  * Box structs are stored as 4 consecutive values.  BoxCorner = {y1, x1, y2, x2}
    (.cuh:156), BoxCenterSize = {y, x, h, w} (.cuh:221).  The code comments say the
    axis naming is irrelevant ("YXYX coding is identical to XYXY", .cuh:155; "YXHW
    coding is identical to XYWH", .cuh:220).  So with box_coding=1 any order works
    as long as boxes, anchors agree:  memory = (c0, c1, s0, s1) where s0 is the size
    along the axis of c0.  For the usual YOLO/SSD layout pass anchors as
    (cx, cy, w, h) and deltas as (dx, dy, dw, dh); the output is then (x1, y1, x2, y2).
  * Decode (box_coding=1, .cuh:230-234):  c0' = d0*a_s0 + a_c0 ; c1' = d1*a_s1 + a_c1 ;
    s0' = a_s0*exp(d2) ; s1' = a_s1*exp(d3).  No variances/scale factors, NO clamp of
    d2/d3 before exp.
  * Output boxes are always BoxCorner (.cu:367, .cuh:249-254), never clipped for
    EfficientNMS_TRT (clipBoxes=false, Params.h:38, only the TF-TRT variants set it).

Known, deliberate deviations from the GPU (a sequential program cannot reproduce them):
  * Tie order.  The sparse filter (.cu:431) appends candidates with atomicAdd, so the
    order of equal scores after the cub radix sort (.cu:689) is not deterministic on
    the GPU.  Here candidates are enumerated in element order (anchor-major,
    class-minor: elementIdx = anchor*C + class, .cu:417-418) and sorted with a
    stable descending sort, i.e. ties are broken by lower anchor index, then lower
    class index.  This is what the dense path (.cu:509, element index as value)
    gives if the radix sort is stable.
  * exp(): FP32 uses the fast intrinsic __expf (.cuh:27) and sigmoid
    __frcp_rn(1+__expf(-a)) (.cuh:31); FP16 uses hexp/hrcp (.cuh:68,72).  NumPy's exp
    is correctly rounded, so decoded sizes / sigmoid scores may differ by a few ulp.
  * FP16 emulation (dtype=np.float16) rounds after every elementary op like the
    __hadd/__hmul intrinsics (.cuh:74-85); hexp may differ by 1 ulp.
"""

from __future__ import annotations

import numpy as np

__all__ = ["efficient_nms"]


# ---------------------------------------------------------------------------
# Elementary ops on the plugin's compute type T (float32 or float16).
# The FP32 intrinsics are __fadd_rn/__fsub_rn/__fmul_rn (.cuh:33-44): every op is
# rounded separately (no FMA), which is exactly what NumPy scalar/array ops do.
# ---------------------------------------------------------------------------


def _reorder_corner(b: np.ndarray) -> np.ndarray:
    """BoxCorner::reorder (.cuh:158-174): swap so that [0] <= [2] and [1] <= [3].

    The swap is done with the same add/sub trick as the CUDA code (which is not an
    exact swap in floating point), vectorised over the leading axis.
    """
    b = b.copy()
    y1, x1, y2, x2 = b[..., 0].copy(), b[..., 1].copy(), b[..., 2].copy(), b[..., 3].copy()
    m = y1 > y2  # gt_mp(y1, y2)                                   .cuh:160
    ny1 = y1 - y2  # y1 = sub_mp(y1, y2)                            .cuh:163
    ny2 = ny1 + y2  # y2 = add_mp(y1, y2)                           .cuh:164
    ny1b = ny2 - ny1  # y1 = sub_mp(y2, y1)                         .cuh:165
    b[..., 0] = np.where(m, ny1b, y1)
    b[..., 2] = np.where(m, ny2, y2)
    m = x1 > x2  # gt_mp(x1, x2)                                   .cuh:167
    nx1 = x1 - x2  #                                                .cuh:170
    nx2 = nx1 + x2  #                                               .cuh:171
    nx1b = nx2 - nx1  #                                             .cuh:172
    b[..., 1] = np.where(m, nx1b, x1)
    b[..., 3] = np.where(m, nx2, x2)
    return b


def _center_to_corner(b: np.ndarray, T) -> np.ndarray:
    """BoxCenterSize -> BoxCorner (.cuh:249-254): h2 = h*0.5, w2 = w*0.5,
    {y - h2, x - w2, y + h2, x + w2}; memory order (c0, c1, s0, s1)."""
    half = T(0.5)
    s0h = b[..., 2] * half  # T h2 = mul_mp(h, (T) 0.5)              .cuh:251
    s1h = b[..., 3] * half  # T w2 = mul_mp(w, (T) 0.5)              .cuh:252
    out = np.empty_like(b)
    out[..., 0] = b[..., 0] - s0h  # sub_mp(y, h2)                   .cuh:253
    out[..., 1] = b[..., 1] - s1h  # sub_mp(x, w2)
    out[..., 2] = b[..., 0] + s0h  # add_mp(y, h2)
    out[..., 3] = b[..., 1] + s1h  # add_mp(x, w2)
    return out


def _decode(box: np.ndarray, anchor: np.ndarray | None, box_coding: int, T) -> np.ndarray:
    """DecodeBoxes (.cu:52-67): returns BoxCorner<T>."""
    if anchor is None:  # if (!param.boxDecoder) return BoxCorner<T>(box);   .cu:59-62
        # No reorder here: the output keeps the input corner order (.cu:61).
        return box.copy() if box_coding == 0 else _center_to_corner(box, T)
    if box_coding == 0:
        # box.reorder(); anchor.reorder();                          .cu:64-65
        b = _reorder_corner(box)
        a = _reorder_corner(anchor)
        # BoxCorner::decode = element-wise add                       .cuh:183-186
        return b + a
    # BoxCenterSize::reorder() is a no-op                            .cuh:223
    # BoxCenterSize::decode                                          .cuh:230-234
    with np.errstate(over="ignore"):
        dec = np.empty_like(box)
        dec[..., 0] = (
            box[..., 0] * anchor[..., 2] + anchor[..., 0]
        )  # add_mp(mul_mp(y, anchor.h), anchor.y)
        dec[..., 1] = (
            box[..., 1] * anchor[..., 3] + anchor[..., 1]
        )  # add_mp(mul_mp(x, anchor.w), anchor.x)
        dec[..., 2] = anchor[..., 2] * np.exp(
            box[..., 2]
        )  # mul_mp(anchor.h, exp_mp(h))  (no clamp)
        dec[..., 3] = anchor[..., 3] * np.exp(
            box[..., 3]
        )  # mul_mp(anchor.w, exp_mp(w))  (no clamp)
    # BoxCorner<T>(box.decode(anchor))                               .cu:66
    return _center_to_corner(dec, T)


def _corner_area(b: np.ndarray, T) -> np.ndarray:
    """BoxCorner::area (.cuh:188-201): w,h in T; 0 if h<=0 or w<=0; else float(h)*float(w).
    No '+1', no normalisation requirement."""
    w = b[..., 3] - b[..., 1]  # T w = sub_mp(x2, x1)                .cuh:190
    h = b[..., 2] - b[..., 0]  # T h = sub_mp(y2, y1)                .cuh:191
    area = h.astype(np.float32) * w.astype(np.float32)  #             .cuh:200
    return np.where((h <= T(0)) | (w <= T(0)), np.float32(0), area).astype(
        np.float32
    )  # .cuh:192-199


def _iou_one_vs_many(test_box: np.ndarray, boxes: np.ndarray, T) -> np.ndarray:
    """IOU<T>(param, threadBox, testBox) (.cu:30-50), vectorised over `boxes`."""
    b1 = _reorder_corner(boxes)  # b1.reorder()                        .cu:37
    b2 = _reorder_corner(test_box[None, :])[0]  # b2.reorder()         .cu:38
    # BoxCorner::intersect (.cuh:210-214): max of low corners, min of high corners
    inter = np.empty_like(b1)
    inter[..., 0] = np.where(b1[..., 0] > b2[0], b1[..., 0], b2[0])
    inter[..., 1] = np.where(b1[..., 1] > b2[1], b1[..., 1], b2[1])
    inter[..., 2] = np.where(b1[..., 2] < b2[2], b1[..., 2], b2[2])
    inter[..., 3] = np.where(b1[..., 3] < b2[3], b1[..., 3], b2[3])
    inter_area = _corner_area(inter, T)  #                            .cu:39
    union = (_corner_area(b1, T) + _corner_area(b2[None, :], T)[0]) - inter_area  # .cu:44 (float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (inter_area / union).astype(np.float32)  #              .cu:49
    iou = np.where(union <= np.float32(0), np.float32(0), iou)  #     .cu:45-48
    iou = np.where(inter_area <= np.float32(0), np.float32(0), iou)  # .cu:40-43
    return iou.astype(np.float32)


def efficient_nms(
    boxes,
    scores,
    anchors=None,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_output_boxes: int,
    background_class: int = 0,
    box_coding: int = 1,
    score_activation: int = 0,
    class_agnostic: bool = False,
    num_selected_boxes: int = 5000,
    dtype=np.float32,
):
    """Mirror of EfficientNMS_TRT for batch size 1.

    boxes:   [1, N, 4] (shared across classes) or [1, N, C, 4] (per class).
    scores:  [1, N, C].
    anchors: [1, N, 4] or None (None = "Standard NMS mode", 2 inputs, README.md:29).
    background_class: class id that is never selected (.cu:421); use -1 for "none"
        (README.md:99).  NOTE: the default 0 drops class 0 entirely.
    class_agnostic: not available before TensorRT 8.6 (8.5 ignores the attribute).
    num_selected_boxes: the candidate cap K.  initialize() sets 5000 on devices with
        regsPerBlock >= 65536 and 2000 otherwise (.cpp:82-91, 8.5:.cpp:79-88); the
        4096 in README.md:121 / Params.h:42 (8.5) is only the struct default.
    dtype: np.float32 or np.float16 = the plugin's I/O type (inputs and the boxes /
        scores outputs share it, .cpp:148).

    Returns (num_detections int32 [1,1], boxes dtype [1,K,4], scores dtype [1,K],
    classes int32 [1,K]) with K = max_output_boxes.
    """
    T = np.dtype(dtype).type
    if T not in (np.float32, np.float16):
        raise ValueError("EfficientNMS only supports float32/float16 (.cpp:279-280)")
    if box_coding not in (0, 1):  # PLUGIN_VALIDATE(boxCoding == 0 || boxCoding == 1)   .cpp:498
        raise ValueError("box_coding must be 0 or 1")
    if score_activation not in (0, 1, False, True):  #                   .cpp:485
        raise ValueError("score_activation must be 0 or 1")
    if not score_threshold >= 0.0:  # PLUGIN_VALIDATE(scoreThreshold >= 0.0F)     .cpp:460
        raise ValueError("score_threshold must be >= 0")
    if not iou_threshold > 0.0:  # PLUGIN_VALIDATE(iouThreshold > 0.0F)            .cpp:467
        raise ValueError("iou_threshold must be > 0")
    if not max_output_boxes > 0:  # PLUGIN_VALIDATE(numOutputBoxes > 0)            .cpp:474
        raise ValueError("max_output_boxes must be > 0")

    boxes = np.asarray(boxes).astype(T)
    scores = np.asarray(scores).astype(T)
    if scores.ndim == 4 and scores.shape[3] == 1:  # [B,N,C,1] accepted  .cpp:307
        scores = scores[..., 0]
    if scores.ndim != 3 or scores.shape[0] != 1:
        raise ValueError("scores must be [1, N, C]")
    _, n_anchors, n_classes = scores.shape  # numAnchors/numClasses      .cpp:308-309,338
    if boxes.ndim == 3:  # [B, N, 4] -> shareLocation = true             .cpp:325-329
        if boxes.shape[1:] != (n_anchors, 4):
            raise ValueError("boxes must be [1, N, 4]")
        share_location = True
    elif boxes.ndim == 4:  # [B, N, 1|C, 4]                               .cpp:331-337
        share_location = boxes.shape[2] == 1
        if (
            boxes.shape[1] != n_anchors
            or boxes.shape[3] != 4
            or not (share_location or boxes.shape[2] == n_classes)
        ):
            raise ValueError("boxes must be [1, N, 1|C, 4]")
    else:
        raise ValueError("boxes must be 3-D or 4-D")
    if anchors is not None:  # 3 inputs -> boxDecoder = true              .cpp:345-353
        anchors = np.asarray(anchors).astype(T)
        if anchors.ndim != 3 or anchors.shape[1:] != (n_anchors, 4):
            raise ValueError("anchors must be [1, N, 4]")

    # -- Outputs are cleared first: 0 boxes, 0 scores, 0 classes, 0 count -----------
    #    cudaMemsetAsync(..., 0x00, ...)                                 .cu:643-646
    k_out = int(max_output_boxes)
    num_detections = np.zeros((1, 1), dtype=np.int32)
    out_boxes = np.zeros((1, k_out, 4), dtype=T)
    out_scores = np.zeros((1, k_out), dtype=T)
    out_classes = np.zeros((1, k_out), dtype=np.int32)

    num_score_elements = n_anchors * n_classes  #                         .cpp:308
    if num_score_elements < 1:  # "Empty Inputs"                          .cu:650-653
        return num_detections, out_boxes, out_scores, out_classes

    # -- EfficientNMSFilterLauncher: threshold handling -----------------------------
    thr = np.float32(score_threshold)  # param.scoreThreshold is a float
    kernel_select_threshold = np.float32(0.007)  #                       .cu:534
    if score_activation:
        # Inverse sigmoid of the threshold; raw (pre-sigmoid) scores are filtered and
        # sorted, the sigmoid is applied only to the written results (.cu:126).
        if thr <= 0:
            thr = np.float32(-(1 << 15))  #                              .cu:538-541
        else:
            thr = np.float32(np.log(thr / (np.float32(1) - thr)))  # logf(t/(1-t))   .cu:544
        kernel_select_threshold = np.float32(
            np.log(kernel_select_threshold / (np.float32(1) - kernel_select_threshold))
        )  #                                                              .cu:546
    dense = thr < kernel_select_threshold  #                              .cu:551
    thr_T = T(thr)  # (T) param.scoreThreshold                           .cu:414 / .cu:499

    flat = scores[0].reshape(-1)  # scoresInput[imageIdx*numScoreElements + elementIdx]  .cu:409
    element_idx = np.arange(num_score_elements)
    class_idx = element_idx % n_classes  # int classIdx = elementIdx % numClasses  .cu:417
    anchor_idx = element_idx // n_classes  # int anchorIdx = elementIdx / numClasses .cu:418

    if not dense:
        # EfficientNMSFilter (.cu:394-456): keep score >= threshold (gte_mp, .cu:414)
        # and drop the background class (.cu:421-424).
        keep = (flat >= thr_T) & (class_idx != background_class)
        cand_scores = flat[keep]
        cand_class = class_idx[keep]
        cand_anchor = anchor_idx[keep]
    else:
        # EfficientNMSDenseIndex (.cu:458-520), used when threshold < 0.007: ALL
        # elements stay candidates; below-threshold and background entries get the
        # score -(1 << 15) = -32768 (.cu:499-506) and topNum = numScoreElements
        # (.cu:516).  Nothing later re-checks the threshold, so such entries can be
        # emitted if fewer than max_output_boxes real detections survive.
        cand_scores = flat.copy()
        low = (flat < thr_T) | (class_idx == background_class)
        cand_scores[low] = T(-(1 << 15))
        cand_class = class_idx
        cand_anchor = anchor_idx
    # (scoreBits is always -1 for EfficientNMS_TRT: .cu:708 for FP32, and for FP16 the
    #  creator never sets it so .cu:714-717 resets it to -1; the +1 score-bit trick of
    #  .cu:441-449 / .cu:474-495 is therefore never active.)

    # -- cub::DeviceSegmentedRadixSort::SortPairsDescending over each image's
    #    candidates (.cu:689-691).  Stable descending sort in element order (see module
    #    docstring on ties).
    order = np.argsort(-cand_scores.astype(np.float64), kind="stable")
    sorted_scores = cand_scores[order]
    sorted_class = cand_class[order]
    sorted_anchor = cand_anchor[order]

    # -- EfficientNMS kernel ----------------------------------------------------
    # int numSelectedBoxes = min(topNumData[imageIdx], param.numSelectedBoxes);  .cu:192
    # => the cap is on the TOTAL number of candidates of the image over all classes,
    #    keeping the highest scores (everything after position K is ignored).
    n_sel = min(len(sorted_scores), int(num_selected_boxes))
    sorted_scores = sorted_scores[:n_sel]
    sorted_class = sorted_class[:n_sel]
    sorted_anchor = sorted_anchor[:n_sel]

    # MapNMSData (.cu:69-116): box index / anchor index, then DecodeBoxes (.cu:115)
    if share_location:
        box_src = boxes.reshape(n_anchors, 4)[
            sorted_anchor
        ]  # imageIdx*numAnchors + anchorMap  .cu:96
    else:
        box_src = boxes[0][
            sorted_anchor, sorted_class
        ]  # batchOffset + anchor*C + class       .cu:100-102
    anc_src = (
        anchors[0][sorted_anchor] if anchors is not None else None
    )  # shareAnchors    .cu:106-109
    cand_boxes = _decode(box_src, anc_src, box_coding, T)

    thread_state = np.zeros(n_sel, dtype=np.int8)  # 0 undecided, 1 kept, -1 dropped   .cu:215
    iou_thr = np.float32(iou_threshold)
    results = 0  # __shared__ unsigned int resultsCounter                              .cu:200-205
    for i in range(n_sel):  # for (int i = 0; i < numSelectedBoxes; i++)               .cu:223
        if thread_state[i] == -1:  # box already dropped: blockState = -1 (skip)       .cu:231-238
            continue
        if results >= k_out:  # early exit: blockState = -2                            .cu:243-246
            break
        thread_state[i] = 1  # kept                                                   .cu:253-254
        # numOutputBoxesPerClass = -1 for EfficientNMS_TRT (Params.h:34), so `write`
        # is always true (.cu:259-266).
        results += 1  #                                                               .cu:269
        # WriteNMSResult (.cu:118-146): outputIdx = resultsCounter - 1 (.cu:123)
        s = sorted_scores[i]
        if score_activation:
            with np.errstate(over="ignore"):
                s = T(T(1) / (T(1) + np.exp(-s)))  # sigmoid_mp(threadScore)          .cu:126
        out_scores[0, results - 1] = s  # else: raw score                              .cu:134
        out_classes[0, results - 1] = sorted_class[i]  #                              .cu:136
        out_boxes[0, results - 1] = cand_boxes[i]  # clipBoxes=false -> no clip        .cu:143
        num_detections[0, 0] = results  #                                             .cu:145

        # Suppression of all higher-index, still-undecided boxes (.cu:315-335)
        j = np.arange(i + 1, n_sel)
        if j.size == 0:
            continue
        cond = thread_state[j] == 0  # threadState[tile] == 0                          .cu:327
        if (
            not class_agnostic
        ):  # ignoreClass = threadClass == testClass   .cu:317-321 (8.5: .cu:322)
            cond &= sorted_class[j] == sorted_class[i]
        cond &= sorted_scores[j] <= sorted_scores[i]  # lte_mp(threadScore, testScore)  .cu:329
        if cond.any():
            jj = j[cond]
            iou = _iou_one_vs_many(cand_boxes[i], cand_boxes[jj], T)
            # IOU<T>(param, threadBox[tile], testBox) >= param.iouThreshold             .cu:330
            thread_state[jj[iou >= iou_thr]] = -1

    return num_detections, out_boxes, out_scores, out_classes


# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------


def _naive_nms(boxes_xyxy, scores, classes, iou_thr, max_out, agnostic):
    """Textbook greedy NMS in float64 (suppress when IoU >= thr) for cross-checking."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    suppressed = np.zeros(len(scores), bool)
    for a in order:
        if suppressed[a]:
            continue
        if len(keep) >= max_out:
            break
        keep.append(a)
        for b in order:
            if b == a or suppressed[b] or b in keep:
                continue
            if not agnostic and classes[b] != classes[a]:
                continue
            x1 = max(boxes_xyxy[a, 0], boxes_xyxy[b, 0])
            y1 = max(boxes_xyxy[a, 1], boxes_xyxy[b, 1])
            x2 = min(boxes_xyxy[a, 2], boxes_xyxy[b, 2])
            y2 = min(boxes_xyxy[a, 3], boxes_xyxy[b, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            aa = (boxes_xyxy[a, 2] - boxes_xyxy[a, 0]) * (boxes_xyxy[a, 3] - boxes_xyxy[a, 1])
            ab = (boxes_xyxy[b, 2] - boxes_xyxy[b, 0]) * (boxes_xyxy[b, 3] - boxes_xyxy[b, 1])
            if inter > 0 and inter / (aa + ab - inter) >= iou_thr:
                suppressed[b] = True
    return keep


def _self_check():
    ok = True

    def check(name, cond):
        nonlocal ok
        ok &= bool(cond)
        print(("PASS " if cond else "FAIL ") + name)

    # 1. Fused decoder, box_coding=1, anchors (cx, cy, w, h), deltas (dx, dy, dw, dh).
    anchors = np.array([[[10, 20, 4, 8]]], np.float32)
    deltas = np.array([[[0.5, -0.25, np.log(2.0), 0.0]]], np.float32)
    sc = np.array([[[0.1, 0.9]]], np.float32)
    n, b, s, c = efficient_nms(
        deltas,
        sc,
        anchors,
        score_threshold=0.5,
        iou_threshold=0.5,
        max_output_boxes=3,
        background_class=-1,
    )
    # cx = 0.5*4+10 = 12, cy = -0.25*8+20 = 18, w = 4*2 = 8, h = 8*1 = 8 -> (8,14,16,22)
    check(
        "decode (cx,cy,w,h)+(dx,dy,dw,dh) -> (x1,y1,x2,y2)",
        n[0, 0] == 1 and np.allclose(b[0, 0], [8, 14, 16, 22], atol=1e-5),
    )
    check(
        "padding rows are zeros, class 0, score 0",
        np.all(b[0, 1:] == 0) and np.all(s[0, 1:] == 0) and np.all(c[0, 1:] == 0),
    )
    check(
        "dtypes int32/float32/float32/int32 and shapes",
        n.dtype == np.int32
        and c.dtype == np.int32
        and b.dtype == np.float32
        and s.dtype == np.float32
        and n.shape == (1, 1)
        and b.shape == (1, 3, 4)
        and s.shape == (1, 3)
        and c.shape == (1, 3),
    )

    # 2. IoU exactly == threshold is suppressed (>=), same class; different class kept.
    bx = np.array([[[0, 0, 4, 1], [0, 0, 2, 1]]], np.float32)  # IoU = 2/4 = 0.5 exactly
    sc = np.array([[[0.0, 0.9, 0.0], [0.0, 0.8, 0.0]]], np.float32)
    n, b, s, c = efficient_nms(
        bx,
        sc,
        None,
        score_threshold=0.1,
        iou_threshold=0.5,
        max_output_boxes=5,
        box_coding=0,
        background_class=-1,
    )
    check("IoU == iou_threshold suppresses (>=)", n[0, 0] == 1 and c[0, 0] == 1)
    n, *_ = efficient_nms(
        bx,
        sc,
        None,
        score_threshold=0.1,
        iou_threshold=0.5000001,
        max_output_boxes=5,
        box_coding=0,
        background_class=-1,
    )
    check("IoU < iou_threshold keeps both", n[0, 0] == 2)
    sc2 = np.array([[[0.0, 0.9, 0.0], [0.0, 0.0, 0.8]]], np.float32)
    n, b, s, c = efficient_nms(
        bx,
        sc2,
        None,
        score_threshold=0.1,
        iou_threshold=0.5,
        max_output_boxes=5,
        box_coding=0,
        background_class=-1,
    )
    check(
        "per-class NMS: different classes do not suppress",
        n[0, 0] == 2 and list(c[0, :2]) == [1, 2],
    )
    n, *_ = efficient_nms(
        bx,
        sc2,
        None,
        score_threshold=0.1,
        iou_threshold=0.5,
        max_output_boxes=5,
        box_coding=0,
        background_class=-1,
        class_agnostic=True,
    )
    check("class_agnostic=True: cross-class suppression", n[0, 0] == 1)

    # 3. score == threshold is kept (>=); background class dropped.
    sc3 = np.array([[[0.9, 0.5, 0.0], [0.0, 0.0, 0.49]]], np.float32)
    bx3 = np.array([[[0, 0, 1, 1], [5, 5, 6, 6]]], np.float32)
    n, b, s, c = efficient_nms(
        bx3,
        sc3,
        None,
        score_threshold=0.5,
        iou_threshold=0.5,
        max_output_boxes=5,
        box_coding=0,
        background_class=0,
    )
    check(
        "score == threshold kept, background class 0 dropped",
        n[0, 0] == 1 and c[0, 0] == 1 and s[0, 0] == np.float32(0.5),
    )

    # 4. score_activation: filter on logits vs logit(thr), output sigmoid.
    logits = np.array([[[2.0], [-0.1], [0.0]]], np.float32)
    bx4 = np.array([[[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]], np.float32)
    n, b, s, c = efficient_nms(
        bx4,
        logits,
        None,
        score_threshold=0.5,
        iou_threshold=0.5,
        max_output_boxes=5,
        box_coding=0,
        background_class=-1,
        score_activation=1,
    )
    check(
        "score_activation: logit >= logit(0.5)=0 kept, sigmoid applied",
        n[0, 0] == 2 and np.allclose(s[0, :2], [1 / (1 + np.exp(-2.0)), 0.5]),
    )

    # 5. Output sorted by score descending; max_output_boxes is a per-image total.
    rng = np.random.default_rng(0)
    N, C = 300, 4
    cxcy = rng.uniform(0, 100, (N, 2))
    wh = rng.uniform(5, 30, (N, 2))
    bxs = np.concatenate([cxcy, wh], 1)[None].astype(np.float32)  # (cx, cy, w, h), no anchors
    scs = rng.uniform(0, 1, (1, N, C)).astype(np.float32)
    n, b, s, c = efficient_nms(
        bxs,
        scs,
        None,
        score_threshold=0.3,
        iou_threshold=0.45,
        max_output_boxes=50,
        background_class=-1,
    )
    k = n[0, 0]
    check(
        "num_detections <= max_output_boxes and scores non-increasing",
        k <= 50 and np.all(np.diff(s[0, :k]) <= 0),
    )
    # Cross-check against textbook greedy NMS on the same candidates.
    corners = np.concatenate(
        [bxs[0, :, :2] - bxs[0, :, 2:] / 2, bxs[0, :, :2] + bxs[0, :, 2:] / 2], 1
    ).astype(np.float64)
    ai, ci = np.nonzero(scs[0] >= np.float32(0.3))
    keep = _naive_nms(corners[ai], scs[0][ai, ci].astype(np.float64), ci, 0.45, 50, False)
    check(
        "matches naive greedy per-class NMS (fp32)",
        k == len(keep)
        and np.array_equal(c[0, :k], ci[keep])
        and np.allclose(s[0, :k], scs[0][ai, ci][keep]),
    )
    n2, *_ = efficient_nms(
        bxs,
        scs,
        None,
        score_threshold=0.3,
        iou_threshold=0.45,
        max_output_boxes=50,
        background_class=-1,
        class_agnostic=True,
    )
    keep = _naive_nms(corners[ai], scs[0][ai, ci].astype(np.float64), ci, 0.45, 50, True)
    check("matches naive greedy class-agnostic NMS (fp32)", n2[0, 0] == len(keep))

    # 6. Candidate cap: only the top-K scores (over all classes) enter NMS.
    n, b, s, c = efficient_nms(
        bxs,
        scs,
        None,
        score_threshold=0.3,
        iou_threshold=0.45,
        max_output_boxes=50,
        background_class=-1,
        num_selected_boxes=3,
    )
    check(
        "candidate cap K=3 -> at most 3 detections, the 3 best-scoring candidates",
        n[0, 0] <= 3 and np.isclose(s[0, 0], scs.max()),
    )

    # 7. Dense path quirk (score_threshold < 0.007): below-threshold entries survive
    #    with score -32768 when there are not enough real detections.
    bx7 = np.array([[[0, 0, 1, 1], [10, 10, 11, 11]]], np.float32)
    sc7 = np.array([[[0.9], [0.001]]], np.float32)
    n, b, s, c = efficient_nms(
        bx7,
        sc7,
        None,
        score_threshold=0.005,
        iou_threshold=0.5,
        max_output_boxes=3,
        box_coding=0,
        background_class=-1,
    )
    check(
        "dense path (thr<0.007) emits below-threshold box with score -32768",
        n[0, 0] == 2 and s[0, 1] == np.float32(-32768),
    )
    n, *_ = efficient_nms(
        bx7,
        sc7,
        None,
        score_threshold=0.01,
        iou_threshold=0.5,
        max_output_boxes=3,
        box_coding=0,
        background_class=-1,
    )
    check("sparse path (thr>=0.007) drops it", n[0, 0] == 1)

    # 8. FP16 emulation runs and returns float16.
    n, b, s, c = efficient_nms(
        bxs,
        scs,
        None,
        score_threshold=0.3,
        iou_threshold=0.45,
        max_output_boxes=50,
        background_class=-1,
        dtype=np.float16,
    )
    check(
        "fp16 mode: float16 boxes/scores, int32 count/classes",
        b.dtype == np.float16
        and s.dtype == np.float16
        and n.dtype == np.int32
        and c.dtype == np.int32
        and n[0, 0] > 0,
    )

    print("ALL PASS" if ok else "SOME CHECKS FAILED")
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if _self_check() else 1)
