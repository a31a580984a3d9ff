"""Checkpoints load with weights_only (a pickle that runs code is refused), resume naming, pretrained weights."""

from __future__ import annotations

import io
import os

import pytest
import structlog
import torch

from common.errors import InputDataError
from jobs.train.checkpoint import checkpoint_uri, latest_checkpoint, load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from jobs.train.models import build_model, load_pretrained


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_latest_checkpoint_is_the_furthest_position(tmp_path):
    out = str(tmp_path)
    assert latest_checkpoint(out) is None
    for epoch, step in [(1, 0), (2, 0), (1, 37), (2, 5)]:
        save_checkpoint(checkpoint_uri(out, epoch=epoch, step=step), {"epoch": epoch, "step": step})
    (tmp_path / "checkpoints" / "notes.txt").write_text("ignored")
    assert latest_checkpoint(out).endswith("checkpoints/e0002-s000005.pt")
    assert load_checkpoint(latest_checkpoint(out)) == {"epoch": 2, "step": 5}


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    uri = str(tmp_path / "c.pt")
    save_checkpoint(uri, {"rng": rng_states()})
    expected = torch.rand(3)
    restore_rng_states(load_checkpoint(uri)["rng"])
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoints" / "e0009-s000000.pt"
    path.parent.mkdir()
    buffer = io.BytesIO()
    torch.save({"model": RunsCode(marker)}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(InputDataError, match="not a loadable checkpoint"):
        load_checkpoint(latest_checkpoint(str(tmp_path)))
    assert not marker.exists()


def test_pretrained_resnet18_keeps_matching_tensors_and_reinitialises_the_rest(tmp_path):
    from safetensors.torch import save_file

    source = build_model(name="resnet18", num_classes=100)  # a different head: 100 classes
    torch.nn.init.constant_(source.layer1[0].conv1.weight, 0.5)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    model = build_model(name="resnet18", num_classes=10)
    load_pretrained(model, uri=str(tmp_path / "w.safetensors"), log=structlog.get_logger())
    assert torch.all(model.layer1[0].conv1.weight == 0.5)
    assert model.fc.weight.shape == (10, 512)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputDataError, match="junk.pt: not a loadable state dict"):
        load_pretrained(model, uri=str(tmp_path / "junk.pt"), log=structlog.get_logger())
