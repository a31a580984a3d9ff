"""`TRAIN_` settings of the training job. `python -m jobs.train --help` renders this class.

A preset (`TRAIN_PRESET`) fills in every training setting the user did not set explicitly, so
`TRAIN_PRESET=fast94` alone is a complete recipe and `TRAIN_PRESET=fast94 TRAIN_EPOCHS=30` changes
one thing. The defaults shown by `--help` are the `baseline` preset's.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Model = Literal["simple", "resnet9", "resnet18"]
Augment = Literal["crop", "flip", "cutout", "mixup", "autoaugment", "randaugment"]

# Each preset names only what differs from the field defaults below (which are `baseline`).
# `base_lr` and `weight_decay` are the values tuned at the global batch `reference_batch`; another
# global batch scales the learning rate (see `effective_lr`), the weight decay stays as tuned.
PRESETS: dict[str, dict[str, Any]] = {
    # The seed's recipe: the small CNN, Adam at 1e-3 for a batch of 64, no schedule, no augmentation.
    "baseline": {},
    # ResNet-9 after Page's "How to train your ResNet" (Page reports 94% on CIFAR-10 in 24 epochs
    # at batch 512): one-cycle SGD peaking at 0.4 after 5 of 24 epochs, crop+flip+cutout, bf16 on GPU.
    "fast94": {
        "model": "resnet9", "epochs": 24, "batch_size": 512, "reference_batch": 512, "optimizer": "sgd",
        "base_lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle", "warmup_epochs": 5.0,
        "label_smoothing": 0.0, "augment": ["crop", "flip", "cutout"], "cutout_size": 8,
    },
    # ResNet-18 (32x32 stem), cosine SGD at 0.1 for batch 128 with AutoAugment + cutout + label
    # smoothing: the usual CIFAR-10 ResNet-18 recipe (published figures for it are ~95-96% at
    # 200 epochs; nothing here has run it on CIFAR-10).
    "accurate": {
        "model": "resnet18", "epochs": 200, "batch_size": 128, "reference_batch": 128, "optimizer": "sgd",
        "base_lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "warmup_epochs": 1.0,
        "label_smoothing": 0.1, "augment": ["crop", "flip", "autoaugment", "cutout"], "cutout_size": 16,
    },
}


def default_cache_dir() -> str:
    return str(Path(tempfile.gettempdir()) / "ml-train-cache")


class TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAIN_", case_sensitive=False, extra="ignore")

    data_uri: str = Field(
        description="Training data in the CIFAR-10 python layout: s3://bucket/key or a path of "
        "cifar-10-python.tar.gz, a path of an extracted cifar-10-batches-py/ folder, or 'download' "
        "(fetched from TRAIN_DOWNLOAD_URL into TRAIN_CACHE_DIR)."
    )
    output_uri: str = Field(
        description="Output prefix (s3://bucket/prefix or a folder): metrics.json, model.safetensors, "
        "predictions.parquet, annotations.parquet and checkpoints/. A run resumes from the latest checkpoint here."
    )
    preset: Literal["baseline", "fast94", "accurate"] = Field(
        "baseline",
        description="Recipe filling every setting below that is not set explicitly: 'baseline' (the seed's "
        "CNN + Adam), 'fast94' (ResNet-9, one-cycle SGD; Page reports 94% on CIFAR-10 in 24 epochs), 'accurate' "
        "(ResNet-18, cosine SGD, AutoAugment; published CIFAR-10 figures ~95-96% at 200 epochs). Neither CIFAR-10 "
        "figure was measured here (no GPU); bench/README.md has what was.",
    )
    model: Model = Field("simple", description="'simple' (seed's CNN), 'resnet9', or 'resnet18' (torchvision, 32x32 stem).")
    pretrained_uri: str | None = Field(
        None, description="resnet18 only: a state dict (.safetensors or .pt) to start from; the classifier is re-initialised when its shape differs."
    )
    epochs: int = Field(10, ge=1, description="Passes over the training set.")
    batch_size: int = Field(64, ge=1, description="Images per step per process (the global batch is this times the world size).")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="'adam' or 'sgd' (Nesterov momentum).")
    lr: float | None = Field(
        None, gt=0, description="Peak learning rate, used as given. Unset: TRAIN_BASE_LR scaled from TRAIN_REFERENCE_BATCH "
        "to the global batch (TRAIN_LR_SCALING); the effective value is logged and in metrics.json.")
    base_lr: float = Field(1e-3, gt=0, description="Peak learning rate tuned for a global batch of TRAIN_REFERENCE_BATCH.")
    reference_batch: int = Field(64, ge=1, description="Global batch (images per optimizer step, all ranks) TRAIN_BASE_LR "
                                 "and TRAIN_WEIGHT_DECAY were tuned for.")
    lr_scaling: Literal["auto", "linear", "sqrt", "none"] = Field(
        "auto", description="How TRAIN_BASE_LR follows the global batch: 'linear' (lr x batch/reference, Goyal et al.), "
        "'sqrt' (lr x sqrt(batch/reference)), 'none'; 'auto' is linear for SGD and sqrt for Adam.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay: the optimizer's own L2 term (Adam: coupled, not AdamW).")
    schedule: Literal["none", "cosine", "onecycle"] = Field(
        "none", description="Learning-rate schedule per step: 'none', 'cosine' (to 0) or 'onecycle' (linear up, linear down to 0)."
    )
    warmup_epochs: float = Field(
        0.0, ge=0, description="Linear warm-up from 0 to the peak learning rate over this many epochs (onecycle: where the "
        "peak is), counted in optimizer steps: at least TRAIN_WARMUP_MIN_STEPS, at most a quarter of the run.")
    warmup_min_steps: int = Field(20, ge=0, description="Floor of a non-zero warm-up, in optimizer steps (a warm-up of a "
                                  "few steps is not one); the quarter-of-the-run cap wins on very short runs.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing for training (the test loss is unsmoothed).")
    augment: Annotated[list[Augment], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated (or JSON list) per-batch augmentations: crop, flip, cutout, mixup, autoaugment, randaugment.",
    )
    crop_padding: int = Field(4, ge=0, description="Random crop: pixels of reflect padding on each side.")
    cutout_size: int = Field(8, ge=1, description="Cutout: side of the zeroed square, in pixels.")
    mixup_alpha: float = Field(0.2, gt=0, description="Mixup: Beta(alpha, alpha) mixing coefficient.")
    seed: int = Field(0, description="Seed for weights, data order and augmentation; same seed, same run (on CPU: bit for bit).")
    log_every: int = Field(100, ge=1, description="Log the running training loss every this many steps.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Autocast precision: 'auto' is bf16 on CUDA and fp32 on CPU."
    )
    channels_last: bool = Field(
        True, description="Use channels_last memory format: faster convolutions on GPU tensor cores and in oneDNN on "
        "CPU (1.16x for the baseline CNN on 2 cores, bench/train_datapath.py).")
    compile: bool = Field(False, description="torch.compile the model (GPU: faster after a warm-up compile; the first epoch pays for it).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks CUDA when available.")
    threads: int = Field(0, ge=0, description="torch intra-op threads per process on CPU (0: torch's default).")
    checkpoint_every: int = Field(1, ge=0, description="Write a checkpoint every this many epochs (0: only on SIGTERM and at the end).")
    data_sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Expected sha256 of the archive; a mismatch is an input error."
    )
    download_url: str = Field(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        description="Where TRAIN_DATA_URI=download fetches the archive from (torchvision's downloader).",
    )
    cache_dir: str = Field(default_factory=default_cache_dir, description="Folder for downloaded and fetched archives and extracted batches.")
    max_extracted_bytes: int = Field(
        4 * 2**30, ge=1,
        description="Most bytes an archive's members may hold together; extraction stops with 65 before the member "
        "that would pass it (a small archive can hold a huge member). CIFAR-10 holds 178 MB.")
    bn_recalibration_batches: int = Field(
        16, ge=0, description="When an epoch has fewer than 50 optimizer steps, BatchNorm running statistics are "
        "recomputed over this many training batches (unaugmented, all ranks averaged) before every evaluation; 0: never.")
    divergence_factor: float = Field(
        2.0, ge=0, description="The run stops as diverged (exit 4) when the training loss is non-finite, or above this "
        "times ln(number of classes) (a fresh classifier's loss) for TRAIN_DIVERGENCE_STEPS steps in a row; 0: only non-finite.")
    divergence_steps: int = Field(50, ge=1, description="Consecutive optimizer steps the loss may stay above the "
                                  "divergence bound before the run stops.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = str(data.get("preset", "baseline")).lower()
        for key, value in PRESETS.get(preset, {}).items():
            data.setdefault(key, value)
        return data

    @field_validator("augment", mode="before")
    @classmethod
    def _split_augment(cls, value: Any) -> Any:
        # "crop,flip" as well as '["crop","flip"]'; a broken JSON list is this field's error (TRAIN_AUGMENT).
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc}") from None
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSettings":
        if self.pretrained_uri and self.model != "resnet18":
            raise ValueError("TRAIN_PRETRAINED_URI is only used with TRAIN_MODEL=resnet18")
        return self

    def lr_rule(self) -> str:
        if self.lr_scaling != "auto":
            return self.lr_scaling
        return "linear" if self.optimizer == "sgd" else "sqrt"


def effective_lr(settings: TrainSettings, *, global_batch: int) -> tuple[float, str]:
    """(peak learning rate, how it was chosen) for `global_batch` images per optimizer step.

    An explicit TRAIN_LR wins. Otherwise TRAIN_BASE_LR is scaled by global_batch / TRAIN_REFERENCE_BATCH:
    linearly for SGD (the gradient noise per step shrinks with the batch, Goyal et al. 2017) and by
    its square root for Adam (whose step is already normalised per coordinate; Malladi et al. 2022).
    """
    if settings.lr is not None:
        return settings.lr, "TRAIN_LR"
    ratio = global_batch / settings.reference_batch
    rule = settings.lr_rule()
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[rule]
    return settings.base_lr * factor, f"{rule}: {settings.base_lr:g} x {factor:g} (batch {global_batch} / {settings.reference_batch})"
