"""TRAIN_ settings: presets, overrides, --help, and config errors as exit 78."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.settings import env_name, load_settings
from jobs.train.__main__ import main
from jobs.train.settings import PRESETS, TrainSettings

REQUIRED = {"TRAIN_DATA_URI": "data.tar.gz", "TRAIN_OUTPUT_URI": "out"}


def settings_from(monkeypatch, **env) -> TrainSettings:
    for key, value in {**REQUIRED, **env}.items():
        monkeypatch.setenv(key, value)
    return load_settings(TrainSettings)


def test_baseline_is_the_seed_recipe(monkeypatch):
    s = settings_from(monkeypatch)
    assert (s.model, s.optimizer, s.lr, s.base_lr, s.reference_batch, s.schedule, s.augment, s.log_every) == (
        "simple", "adam", None, 1e-3, 64, "none", [], 100)


def test_preset_fills_what_is_unset_and_explicit_values_win(monkeypatch):
    s = settings_from(monkeypatch, TRAIN_PRESET="fast94", TRAIN_EPOCHS="30", TRAIN_AUGMENT="crop,flip")
    assert s.model == "resnet9" and s.optimizer == "sgd" and s.schedule == "onecycle"
    assert s.epochs == 30 and s.augment == ["crop", "flip"]
    assert settings_from(monkeypatch, TRAIN_PRESET="accurate", TRAIN_AUGMENT='["mixup"]').augment == ["mixup"]
    assert all(set(values) <= set(TrainSettings.model_fields) for values in PRESETS.values())


@pytest.mark.parametrize("env,culprit", [
    ({"TRAIN_MODEL": "vgg"}, "TRAIN_MODEL"),
    ({"TRAIN_AUGMENT": "crop,rotate"}, "TRAIN_AUGMENT"),
    ({"TRAIN_DATA_SHA256": "abc"}, "TRAIN_DATA_SHA256"),
    ({"TRAIN_EPOCS": "3"}, "TRAIN_EPOCS"),
    ({"TRAIN_PRETRAINED_URI": "w.pt"}, "TRAIN_PRETRAINED_URI"),
])
def test_invalid_values_name_the_variable(monkeypatch, env, culprit):
    with pytest.raises(ConfigError, match=culprit):
        settings_from(monkeypatch, **env)


def test_main_exits_78_on_bad_config(monkeypatch, capsys):
    monkeypatch.setenv("TRAIN_OUTPUT_URI", "out")
    monkeypatch.delenv("TRAIN_DATA_URI", raising=False)
    assert main([]) == 78
    assert "TRAIN_DATA_URI" in capsys.readouterr().out


def test_help_lists_every_variable(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in TrainSettings.model_fields:
        assert env_name(TrainSettings, name) in text
    assert "torchrun --standalone --nproc_per_node=N -m jobs.train" in text


@pytest.mark.parametrize("variable, value, needle", [
    ("WORLD_SIZE", "abc", "expected an integer"),
    ("RANK", "abc", "expected an integer"),
    ("LOCAL_RANK", "-1", "must be >= 0"),
    ("RANK", "2", "not below WORLD_SIZE"),
    ("TRAIN_CACHE_DIR", "@FILE@/cache", "cannot use"),
])
def test_bad_process_variables_are_78_naming_them(job_env, tmp_path, variable, value, needle):
    """torchrun's variables and the cache folder are settings too: before, a raw traceback and exit 1."""
    import subprocess
    import sys

    from tests.train.conftest import ROOT, log_lines

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    env = {**job_env, "TRAIN_DATA_URI": str(tmp_path / "data.tar.gz"), "TRAIN_OUTPUT_URI": str(tmp_path / "out"),
           "TRAIN_DEVICE": "cpu", "TRAIN_CACHE_DIR": str(tmp_path / "cache"), variable: value.replace("@FILE@", str(a_file))}
    proc = subprocess.run([sys.executable, "-m", "jobs.train"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    error = log_lines(proc.stdout)[-1]["error"]
    assert variable in error and needle in error, error
