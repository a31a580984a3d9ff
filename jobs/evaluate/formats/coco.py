"""COCO JSON: a ground-truth file (images, annotations, categories) or a results list."""

from __future__ import annotations

from jobs.evaluate.formats import Format, ReadOptions, Source
from jobs.evaluate.load import Table, read_coco_ground_truth, read_coco_results


def read(source: Source, options: ReadOptions) -> Table:
    return read_coco_results(source.blob) if options.predictions else read_coco_ground_truth(source.blob)


def _looks_like_json(source: Source) -> bool:
    return source.blob.data[:64].lstrip()[:1] in (b"[", b"{")


FORMAT = Format(name="coco", read=read, extensions=(".json",), sniff=_looks_like_json)
