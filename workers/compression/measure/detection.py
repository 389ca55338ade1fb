"""Detection quality for box outputs: the compressed model's detections scored against the original's.

An object detector's raw output compared as numbers (cosine) says little: a cosine of 0.999 can hide a
lost box, and boxes that moved a pixel can lower it. What a user asks is whether the same objects are
still found. So the original's detections are the ground truth and the compressed model's detections are
scored against them with mAP at IoU 0.5 (ranked down to a score of 0.001, as mAP evaluation ranks; all-point interpolated AP per class, averaged over the classes the
original found), the metric detection papers report for a compressed model against its fp32 teacher.

Recognised layout: the YOLOv8/YOLO11 export head, one tensor [N, 4 + classes, cells] with cells the grid
cells of strides 8, 16 and 32 over the input's height and width, boxes as (cx, cy, w, h) in input pixels
and class scores already through a sigmoid (ultralytics' ONNX exports, nudenet's). Other box layouts
(YOLOv5's objectness column, post-NMS [N, k, 6], SSD anchors) are compared as values: decoding them by
guess would report a number that could be wrong, which is worse than a cosine that is only vague.
"""

from __future__ import annotations

import torch

STRIDES = (8, 16, 32)
CONFIDENCE = 0.25  # the original's detections: ultralytics' default prediction threshold, what a user acts on
# the compressed model's detections are ranked down to this score, as mAP evaluation does (ultralytics' val
# uses 0.001): a box whose score slipped from 0.30 to 0.24 lowers the AP a little instead of counting as lost
RANKED = 0.001
MAX_DETECTIONS = 300
NMS_IOU = 0.45
MATCH_IOU = 0.5
MAX_CLASSES = 1000


def grid_cells(height: int, width: int) -> int:
    """The cells of a YOLOv8 head over an input of this size (each stride rounds up, as its convolutions do)."""
    return sum(-(-height // s) * -(-width // s) for s in STRIDES)


def is_yolo_head(output: torch.Tensor, x: torch.Tensor) -> bool:
    """[N, 4 + classes, cells] for an image input [N, C, H, W]: the shape alone, as the export leaves it."""
    if output.ndim != 3 or x.ndim != 4 or not x.is_floating_point():
        return False
    return output.shape[2] == grid_cells(x.shape[2], x.shape[3]) and 5 <= output.shape[1] <= 4 + MAX_CLASSES


Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes [k, 4] xyxy, scores [k], classes [k]


def decode(output: torch.Tensor, confidence: float = CONFIDENCE) -> list[Detections]:
    """Per image: the boxes whose best class scores at least `confidence`, after class-wise NMS."""
    out = []
    for pred in output.float():
        boxes, scores = pred[:4].T, pred[4:].T
        best, classes = scores.max(1)
        keep = best >= confidence
        from torchvision.ops import batched_nms, box_convert  # only for a box head (importing it costs ~1 s)

        boxes, best, classes = box_convert(boxes[keep], "cxcywh", "xyxy"), best[keep], classes[keep]
        kept = batched_nms(boxes, best, classes, NMS_IOU)[:MAX_DETECTIONS]
        out.append((boxes[kept], best[kept], classes[kept]))
    return out


def _average_precision(tp: torch.Tensor, scores: torch.Tensor, positives: int) -> float:
    """All-point interpolated AP: the area under the precision envelope, over recall."""
    if positives == 0:
        return 0.0
    order = scores.argsort(descending=True)
    hits = tp[order].float()
    recall = torch.cat([torch.zeros(1), hits.cumsum(0) / positives, torch.ones(1)])
    precision = torch.cat([torch.ones(1), hits.cumsum(0) / torch.arange(1, len(hits) + 1), torch.zeros(1)])
    precision = precision.flip(0).cummax(0).values.flip(0)  # the envelope: best precision at any higher recall
    return float(((recall[1:] - recall[:-1]) * precision[1:]).sum())


def map50(predicted: list[Detections], reference: list[Detections]) -> float | None:
    """mAP@0.5 of `predicted` with `reference` as ground truth; None when the reference found nothing."""
    classes = sorted({int(c) for _, _, cls in reference for c in cls})
    if not classes:
        return None
    from torchvision import ops

    aps = []
    for c in classes:
        hits, scores, positives = [], [], 0
        for (p_boxes, p_scores, p_cls), (r_boxes, _, r_cls) in zip(predicted, reference):
            truth, mine = r_boxes[r_cls == c], p_cls == c
            positives += len(truth)
            boxes, conf = p_boxes[mine], p_scores[mine]
            taken = torch.zeros(len(truth), dtype=torch.bool)
            for k in conf.argsort(descending=True).tolist():  # greedy, most confident first, as COCO matches
                hit = False
                if len(truth):
                    iou = ops.box_iou(boxes[k : k + 1], truth)[0].masked_fill(taken, -1.0)
                    j = int(iou.argmax())
                    if iou[j] >= MATCH_IOU:
                        taken[j], hit = True, True
                hits.append(hit)
                scores.append(float(conf[k]))
        aps.append(_average_precision(torch.tensor(hits, dtype=torch.bool), torch.tensor(scores), positives))
    return sum(aps) / len(aps)


def detection_agreement(output: torch.Tensor, baseline: torch.Tensor, x: torch.Tensor) -> tuple[float, int] | None:
    """(mAP@0.5 against the baseline's detections, how many the baseline found) for a YOLO head, else None."""
    if not is_yolo_head(baseline, x) or output.shape != baseline.shape:
        return None
    reference = decode(baseline)
    score = map50(decode(output, RANKED), reference)
    return None if score is None else (score, sum(len(b) for b, _, _ in reference))
