"""One settings object per training: the library, the CLI and the Train tab read the same fields."""

from __future__ import annotations

import dataclasses

import pytest
from ml_fixtures import SIZE, ml_home, photo_items  # noqa: F401 - fixture

from dragonclf.errors import DragonError
from dragonclf.settings import TrainSettings, field_names, help_for


def test_every_setting_is_documented_once_and_unknown_ones_are_refused():
    assert all(help_for(name) for name in field_names())
    s = TrainSettings().updated(epochs=2, size=64)
    assert (s.epochs, s.size, s.batch_size) == (2, 64, TrainSettings().batch_size)
    with pytest.raises(DragonError, match="epocs"):
        TrainSettings().updated(epocs=2)
    with pytest.raises(DragonError, match="at least one epoch"):
        TrainSettings(epochs=0).check()
    with pytest.raises(DragonError, match="schedule"):
        TrainSettings(schedule="cosine").check()
    with pytest.raises(DragonError, match="bn_stats"):
        TrainSettings(bn_stats="running").check()


def test_machine_sized_starting_values_are_the_measured_ones():
    """bench/RESULTS.md (hard set): 224 px on both; 3 epochs of 32 on a CPU, 5 of 64 on a GPU."""
    cpu, gpu = TrainSettings.for_machine(cuda=False), TrainSettings.for_machine(cuda=True)
    assert (cpu.size, cpu.batch_size, cpu.epochs) == (224, 32, 3)
    assert (gpu.size, gpu.batch_size, gpu.epochs) == (224, 64, 5)
    assert TrainSettings.for_machine(cuda=False, epochs=7).epochs == 7


def test_the_cli_offers_the_settings_with_their_one_description(capsys):
    from dragonclf.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    for name in ("epochs", "batch_size", "lr", "freeze_epochs", "schedule", "augment", "valid_share"):
        assert "--" + name.replace("_", "-") in text and " ".join(help_for(name).split()) in text, name
    defaults = TrainSettings.for_machine()
    args = build_parser().parse_args(["train", "--dataset", "demo"])
    assert (args.epochs, args.batch_size) == (defaults.epochs, defaults.batch_size)


def test_a_saved_fine_tune_records_every_setting(ml_home):
    """model.json's params are the settings the model was trained with, field for field."""
    from dragonclf import train
    from dragonclf.modelstore import read_meta

    r = train.fine_tune(photo_items(per_label=4), dataset="photos", epochs=1, size=SIZE, batch_size=8,
                        settings=TrainSettings(seed=3))
    params = read_meta(r.model_dir)["params"]
    assert set(params) == {f.name for f in dataclasses.fields(TrainSettings)}
    assert params["epochs"] == 1 and params["size"] == SIZE and params["seed"] == 3 and params["warm_start"] is True
