"""The three networks: the seed's small CNN, a ResNet-9 after Page (who reports 94% on CIFAR-10), torchvision's ResNet-18.

All take normalised float images (B, 3, 32, 32) and return logits (B, num_classes).
"""

from __future__ import annotations

import io

import torch
from torch import nn

from common import storage
from common.errors import ConfigError, InputDataError


class SimpleCNN(nn.Sequential):
    """The seed's baseline. Padding 1 keeps 32 -> 16 -> 8 after the pools, so the FC sees 64*8*8 = 4096."""

    def __init__(self, num_classes: int = 10):
        super().__init__(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 8 * 8, 512), nn.ReLU(),
            nn.Linear(512, num_classes),
        )


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """Page's DAWNBench ResNet-9: 64-128-256-512 channels, two residual blocks, max-pool head.

    The logits are scaled by 1/8: with the un-normalised max-pool features, unscaled logits make the
    early softmax saturate (Page, "How to train your ResNet", part 4).
    """

    def __init__(self, num_classes: int = 10, logit_scale: float = 0.125):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 64),
            conv_bn(64, 128), nn.MaxPool2d(2), Residual(128),
            conv_bn(128, 256), nn.MaxPool2d(2),
            conv_bn(256, 512), nn.MaxPool2d(2), Residual(512),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(512, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)) * self.logit_scale


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool: 32x32 inputs keep 4x4 at the end."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_model(*, name: str, num_classes: int) -> nn.Module:
    if name == "simple":
        return SimpleCNN(num_classes)
    if name == "resnet9":
        return ResNet9(num_classes)
    if name == "resnet18":
        return resnet18_cifar(num_classes)
    raise ConfigError(f"TRAIN_MODEL: unknown model {name!r}")


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """A .safetensors file or a torch state dict (loaded with weights_only=True)."""
    data = storage.read(uri).data
    try:
        if uri.endswith(".safetensors"):
            from safetensors.torch import load

            return load(data)
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return state.get("model", state) if isinstance(state, dict) else state
    except Exception as exc:
        raise InputDataError(f"{uri}: not a loadable state dict: {exc}") from None


def load_pretrained(model: nn.Module, *, uri: str, log) -> None:
    """Copy every tensor whose name and shape match; the rest (e.g. an ImageNet stem or head) stays fresh."""
    own = model.state_dict()
    given = read_state_dict(uri)
    usable = {k: v for k, v in given.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise InputDataError(f"{uri}: no tensor matches the model's names and shapes")
    model.load_state_dict(usable, strict=False)
    log.info("pretrained weights loaded", uri=uri, loaded=len(usable), kept_fresh=sorted(set(own) - set(usable)))
