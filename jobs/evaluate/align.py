"""Join predictions to annotations: images on a normalised key (or image ids), categories by id or name.

The result holds integer arrays only (image index, class index per row) and an `alignment` block
that says what did not join. Images are ordered as pycocotools orders them (by COCO id, else by
key), which fixes the order of equal-score detections and so makes AP agree with it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath

import numpy as np

from common.errors import ConfigError, InputDataError
from jobs.evaluate.geometry import Polygons
from jobs.evaluate.load import Table
from jobs.evaluate.settings import IouType

MAX_EXAMPLES = 10


@dataclass
class ClassInfo:
    class_id: int | str | None
    name: str


@dataclass
class Objects:
    """Rows of one side after alignment. `boxes` (n, 4) xywh; `polygons` columnar, one row each;
    `masks` (segm) one pycocotools RLE dict each; `area` (n,) what COCO's area ranges compare."""

    image: np.ndarray
    cls: np.ndarray
    boxes: np.ndarray | None
    polygons: Polygons | None
    crowd: np.ndarray
    score: np.ndarray | None = None
    masks: np.ndarray | None = None
    area: np.ndarray | None = None

    def take(self, keep: np.ndarray) -> "Objects":
        if keep.dtype == bool and keep.all():  # nothing dropped: share the arrays, copy nothing
            return self
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Objects(
            image=self.image[idx], cls=self.cls[idx],
            boxes=None if self.boxes is None else self.boxes[idx],
            polygons=None if self.polygons is None else self.polygons.take(idx),
            crowd=self.crowd[idx], score=None if self.score is None else self.score[idx],
            masks=None if self.masks is None else self.masks[idx],
            area=None if self.area is None else self.area[idx],
        )


@dataclass
class Aligned:
    classes: list[ClassInfo]
    n_images: int
    gt: Objects
    det: Objects
    geometry: str  # "bbox", "polygon", "segm" or "image" (image-level, multi-label)
    alignment: dict
    geometry_reason: str = ""
    # Coordinates are fractions of the image size (YOLO files without image sizes): IoUs are as in
    # pixels, but pixel areas are unknown.
    normalised: bool = False


def normalise_key(name: str, join_key: str) -> str:
    if join_key == "exact":
        return name
    path = name.replace("\\", "/")
    base = path.rpartition("/")[2]
    if base in ("", ".", ".."):  # a trailing '/' or '.': let pathlib say what the name is
        base = PurePosixPath(path).name
    stem, dot, _ = base.rpartition(".")
    return (stem if dot and stem else base).lower()


def _sort_key(value):
    return (isinstance(value, str), value)


def _gt_images(gt: Table, join_key: str) -> tuple[list, list[str], np.ndarray]:
    """Image ids (or names) in evaluation order, their join keys, and each annotation row's image index."""
    if gt.images is not None:
        images = sorted(gt.images, key=lambda im: _sort_key(im.id))
        ids = [im.id for im in images]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InputDataError(f"{gt.uri}: image id {dup!r} appears twice in images")
        position = {i: n for n, i in enumerate(ids)}
        missing = [ref for ref in gt.image_refs if ref not in position]
        if missing:
            raise InputDataError(f"{gt.uri}: annotations refer to image_id {missing[0]!r}, which is not in images")
        ref_index = np.array([position[ref] for ref in gt.image_refs], dtype=np.int64)
        keys = [normalise_key(im.file_name, join_key) if im.file_name else None for im in images]
        names = [im.file_name for im in images]
    else:
        names = [str(ref) for ref in gt.image_refs]
        keys = [normalise_key(n, join_key) for n in names]
        order = sorted(range(len(names)), key=lambda i: keys[i])
        ref_index = np.empty(len(names), dtype=np.int64)
        ref_index[order] = np.arange(len(names))
        names, keys = [names[i] for i in order], [keys[i] for i in order]
        ids = names
    seen: dict[str, str] = {}
    for name, key in zip(names, keys):
        if key is None:
            continue
        if key in seen and (gt.images is not None or seen[key] != name):
            raise InputDataError(
                f"{gt.uri}: images {seen[key]!r} and {name!r} both normalise to {key!r}; "
                "rename one or set EVAL_JOIN_KEY=exact"
            )
        seen[key] = name
    return ids, keys, ref_index[gt.image_codes] if len(gt.image_codes) else np.zeros(0, np.int64)


def _join_predictions(gt: Table, pred: Table, ids: list, keys: list, join_key: str) -> tuple[np.ndarray, str]:
    """Each prediction ref's image index (-1 where it does not join) and how the join was made."""
    # Refs that are image ids (COCO results), or a table whose image column holds the integer ids
    # of the annotations' image list, join on the ids.
    if gt.images is not None and (pred.image_refs_are_ids or (
            all(type(ref) is int for ref in pred.image_refs) and all(type(i) is int for i in ids))):
        position = {i: n for n, i in enumerate(ids)}
        return np.array([position.get(ref, -1) for ref in pred.image_refs], dtype=np.int64), "coco_image_id"
    if any(k is None for k in keys):
        raise InputDataError(f"{gt.uri}: images without file_name cannot be joined to {pred.uri} by name")
    position = {k: n for n, k in enumerate(keys)}
    refs = [normalise_key(str(ref), join_key) for ref in pred.image_refs]
    return np.array([position.get(r, -1) for r in refs], dtype=np.int64), join_key


def _classes(gt: Table, pred: Table) -> tuple[list[ClassInfo], np.ndarray, np.ndarray]:
    """The class list, and the class index of each GT and prediction category ref."""
    classes: list[ClassInfo] = []
    by_id: dict = {}
    by_name: dict[str, int] = {}

    def add(class_id, name) -> int:
        classes.append(ClassInfo(class_id, name))
        if class_id is not None:
            by_id[class_id] = len(classes) - 1
        by_name.setdefault(name, len(classes) - 1)
        return len(classes) - 1

    for cat in sorted(gt.categories or [], key=lambda c: _sort_key(c.id)):
        if cat.id in by_id:
            raise InputDataError(f"{gt.uri}: category id {cat.id!r} appears twice in categories")
        add(cat.id, cat.name)

    def resolve(ref, *, uri: str, strict: bool) -> int:
        if isinstance(ref, bool):
            ref = int(ref)
        if not isinstance(ref, str) or (ref.isdigit() and by_id and int(ref) in by_id):
            key = int(ref)
            if key in by_id:
                return by_id[key]
            if strict:
                raise InputDataError(f"{uri}: category id {ref!r} is not in the categories")
            return add(key, str(key))
        if ref in by_name:
            return by_name[ref]
        if strict:
            raise InputDataError(f"{uri}: category {ref!r} is not in the categories")
        return add(None, ref)

    strict_gt = bool(gt.categories)
    gt_map = np.array([resolve(r, uri=gt.uri, strict=strict_gt) for r in gt.category_refs], dtype=np.int64)
    pred_map = np.array([resolve(r, uri=pred.uri, strict=False) for r in pred.category_refs], dtype=np.int64)
    return classes, gt_map, pred_map


def _image_sizes(gt: Table, gt_image: np.ndarray, n_images: int) -> np.ndarray | None:
    """(n_images, 2) height, width in evaluation order (COCO images by id; a table's `height` and
    `width` columns), or None when any is missing."""
    if gt.images is None:
        if gt.row_sizes is None:
            return None
        sizes = np.full((n_images, 2), -1, dtype=np.int64)
        sizes[gt_image] = gt.row_sizes
        clash = np.flatnonzero((sizes[gt_image] != gt.row_sizes).any(axis=1))
        if clash.size:
            raise InputDataError(f"{gt.uri}: row {clash[0] + 1}: image size {gt.row_sizes[clash[0]].tolist()} differs "
                                 f"from another row's {sizes[gt_image[clash[0]]].tolist()} for the same image")
        return sizes
    images = sorted(gt.images, key=lambda im: _sort_key(im.id))
    if any(im.height is None or im.width is None for im in images):
        return None
    return np.array([(im.height, im.width) for im in images], dtype=np.int64).reshape(-1, 2)


def _first_rle(table: Table) -> str:
    return table.segmentation_at(int(table.rle_rows[0]))


def _geometry(gt: Table, pred: Table, iou_type: IouType, sizes: np.ndarray | None) -> tuple[str, str]:
    """The geometry to match on, and why (the report's `matching.reason`)."""
    segmented = all(t.segmentations is not None or t.polygons is not None for t in (gt, pred))
    rle = [t for t in (gt, pred) if t.rle_rows is not None and t.rle_rows.size]
    if gt.boxes is None and pred.boxes is None and gt.polygons is None and pred.polygons is None and not segmented:
        return "image", "neither side has geometry: image-level (multi-label)"
    if iou_type == IouType.SEGM or (iou_type == IouType.AUTO and segmented and sizes is not None):
        if not segmented:
            side = gt.uri if gt.segmentations is None and gt.polygons is None else pred.uri
            raise ConfigError(f"EVAL_IOU_TYPE=segm but {side} has no segmentations")
        if sizes is None:
            raise InputDataError(f"{gt.uri}: EVAL_IOU_TYPE=segm needs every image's height and width (`height` and "
                                 "`width` of COCO `images`, or `height` and `width` columns in a table)")
        why = "EVAL_IOU_TYPE=segm" if iou_type == IouType.SEGM else "auto: both sides carry segmentations and the images have sizes"
        return "segm", why + "; COCO masks (pycocotools RLE) at each image's height x width"
    if rle and (iou_type == IouType.POLYGON or (iou_type == IouType.AUTO and segmented)):
        # never evaluated as its box: say what can read it
        hint = "add height and width to the images" if iou_type == IouType.AUTO else "set EVAL_IOU_TYPE=segm"
        raise InputDataError(f"{_first_rle(rle[0])}: RLE cannot be evaluated as a polygon ({hint} for COCO masks, "
                             "or EVAL_IOU_TYPE=bbox for the boxes)")
    if pred.boxes is None and pred.polygons is None:
        raise InputDataError(f"{pred.uri}: predictions have no boxes or polygons but {gt.uri} has; cannot match by IoU")
    if gt.boxes is None and gt.polygons is None:
        raise InputDataError(f"{gt.uri}: annotations have no boxes or polygons but {pred.uri} has; cannot match by IoU")
    both_polygons = gt.polygons is not None and pred.polygons is not None
    if iou_type == IouType.POLYGON and not both_polygons and not rle:
        side = gt.uri if gt.polygons is None else pred.uri
        raise ConfigError(f"EVAL_IOU_TYPE=polygon but {side} has no polygons")
    if iou_type == IouType.POLYGON or (iou_type == IouType.AUTO and segmented):
        why = "EVAL_IOU_TYPE=polygon" if iou_type == IouType.POLYGON else "auto: both sides carry polygons, images have no sizes"
        return "polygon", why + "; exact polygon IoU"
    if gt.boxes is None or pred.boxes is None:
        side = gt.uri if gt.boxes is None else pred.uri
        raise InputDataError(f"{side}: no boxes for box IoU; give boxes or set EVAL_IOU_TYPE=segm or polygon")
    if iou_type == IouType.BBOX:
        return "bbox", "EVAL_IOU_TYPE=bbox"
    side = "predictions" if pred.segmentations is None else "annotations"
    return "bbox", f"auto: the {side} carry no segmentations" if gt.segmentations or pred.segmentations else "auto: boxes only"


def _in_pixels(table: Table, image: np.ndarray, sizes: np.ndarray | None, other: Table) -> Table:
    """A normalised table's geometry in pixels of the annotations' image sizes (`_image_sizes`)."""
    if sizes is None:
        raise InputDataError(
            f"{table.uri}: coordinates are normalised (YOLO) and {other.uri}'s are in pixels; converting needs "
            "every image's width and height: give COCO images with sizes, or YOLO images in an images/ folder")
    wh = np.where(image[:, None] >= 0, sizes[np.maximum(image, 0), ::-1], 1).astype(np.float64)
    boxes = None if table.boxes is None else table.boxes * np.tile(wh, 2)
    polygons = table.polygons
    if polygons is not None:
        from jobs.evaluate.formats.yolo import scale_polygons

        polygons = scale_polygons(polygons, wh)
    return replace(table, boxes=boxes, polygons=polygons, normalised=False)


def _objects(table: Table, image: np.ndarray, cls: np.ndarray, keep: np.ndarray, geometry: str,
             sizes: np.ndarray | None) -> Objects:
    objects = Objects(
        image=image, cls=cls,
        boxes=table.boxes if geometry != "image" else None,
        polygons=table.polygons if geometry == "polygon" else None,
        crowd=table.iscrowd, score=table.score,
    )
    objects = objects.take(keep)
    if geometry == "segm":
        from jobs.evaluate.masks import to_rles

        rows = np.flatnonzero(keep) if keep.dtype == bool else keep
        objects.masks = to_rles(table.segmentations, table.polygons, rows, objects.image, sizes, table.segmentation_at)
    if geometry in ("bbox", "segm"):
        objects.area = _areas(table, objects, rows=np.flatnonzero(keep) if keep.dtype == bool else keep, geometry=geometry)
    return objects


def _best_row_per_pair(det: Objects, n_classes: int) -> np.ndarray:
    """Indices (in input order) of the highest-scored row of each (image, class); the first on ties."""
    pair = det.image * max(n_classes, 1) + det.cls
    order = np.lexsort((np.arange(pair.size), -det.score, pair))
    first = np.r_[True, pair[order][1:] != pair[order][:-1]] if pair.size else np.zeros(0, bool)
    return np.sort(order[first])


def _areas(table: Table, objects: Objects, *, rows: np.ndarray, geometry: str) -> np.ndarray:
    """What COCO's area ranges compare, as pycocotools takes it: ground truth its `area` (computed
    where the file has none); detections their box's w x h when they have boxes (also for segm, as
    pycocotools' loadRes does), else their mask's area."""
    computed = None
    if geometry == "segm" and (table.score is None or objects.boxes is None):
        from jobs.evaluate.masks import mask_areas

        computed = mask_areas(objects.masks)
    elif objects.boxes is not None:
        computed = objects.boxes[:, 2] * objects.boxes[:, 3]
    if table.score is not None or table.area is None:
        return computed
    given = table.area[rows]
    return np.where(np.isnan(given), computed, given) if computed is not None else given


def align(gt: Table, pred: Table, *, join_key: str, iou_type: IouType | str) -> Aligned:
    ids, keys, gt_image = _gt_images(gt, join_key)
    pred_ref_image, joined_on = _join_predictions(gt, pred, ids, keys, join_key)
    classes, gt_cls_map, pred_cls_map = _classes(gt, pred)
    sizes = _image_sizes(gt, gt_image, len(ids))
    geometry, reason = _geometry(gt, pred, IouType(iou_type), sizes)
    pred_image = pred_ref_image[pred.image_codes] if pred.rows else np.zeros(0, np.int64)
    if geometry != "image" and gt.normalised != pred.normalised:  # one side YOLO without sizes
        if pred.normalised:
            pred = _in_pixels(pred, pred_image, sizes, gt)
        else:
            gt = _in_pixels(gt, gt_image, None, pred)

    has_category = gt.category_codes >= 0
    gt_cls = np.full(gt.rows, -1, dtype=np.int64)
    gt_cls[has_category] = gt_cls_map[gt.category_codes[has_category]]
    gt_objects = _objects(gt, gt_image, gt_cls, has_category, geometry, sizes)
    if geometry == "image":  # one label per (image, class): duplicates say nothing more
        pair = gt_objects.image * max(len(classes), 1) + gt_objects.cls
        _, first = np.unique(pair, return_index=True)
        gt_objects = gt_objects.take(np.sort(first))

    pred_cls = pred_cls_map[pred.category_codes] if pred.rows else np.zeros(0, np.int64)
    joined = pred_image >= 0
    det = _objects(pred, pred_image, pred_cls, joined, geometry, sizes)
    collapsed = 0
    if geometry == "image":  # the image's score for a class is the best of its rows for it
        det = det.take(_best_row_per_pair(det, len(classes)))
        collapsed = int(joined.sum()) - det.image.size
    if det.score is not None:
        det.score.flags.writeable = False  # later steps share one sort of it (see match.descending_rank)

    unjoined_refs = np.unique(pred.image_codes[~joined])
    predicted_images = np.flatnonzero(np.bincount(pred_image[joined], minlength=len(ids)))
    alignment = {
        "join": joined_on,
        "annotation_images": len(ids),
        "prediction_images": len(pred.image_refs),
        "matched_images": int(predicted_images.size),
        "unmatched_prediction_images": {
            "images": int(unjoined_refs.size),
            "rows": int((~joined).sum()),
            "examples": [str(pred.image_refs[i]) for i in unjoined_refs[:MAX_EXAMPLES]],
        },
        "annotated_images_without_predictions": len(ids) - int(predicted_images.size),
        "collapsed_prediction_rows": collapsed,
    }
    return Aligned(classes, len(ids), gt_objects, det, geometry, alignment, reason,
                   normalised=geometry != "image" and gt.normalised and pred.normalised)
