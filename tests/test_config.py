"""Typed config: every shipped recipe loads, overrides are typed, unknown keys name the nearest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvl.config.experiment import load_experiment, shipped_recipes
from medvl.config.loader import ConfigError, parse_overrides
from medvl.registry import Registry, UnknownNameError

RECIPES = shipped_recipes()


def test_recipes_are_shipped() -> None:
    assert "quickstart" in {p.stem for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(recipe: Path) -> None:
    cfg = load_experiment(recipe)
    assert cfg.model is not None and cfg.train.output_dir
    # A round trip through the plain dict (what checkpoints store) gives the same config.
    from medvl.config.experiment import experiment_from_dict

    assert experiment_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_quickstart_is_the_default() -> None:
    assert load_experiment().to_dict() == load_experiment("quickstart").to_dict()


def test_overrides_are_parsed_and_typed() -> None:
    cfg = load_experiment(
        "quickstart",
        [
            "train.lr=3e-4",
            "train.epochs=2",
            "train.loggers=[jsonl]",
            "data.strict=true",
            "model.size=tiny",
            "model.d_model=48",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2 and cfg.train.loggers == ["jsonl"] and cfg.data.strict is True
    assert cfg.model_size == "tiny" and cfg.model.d_model == 48


def test_size_preset_applies_before_field_overrides() -> None:
    tiny = load_experiment("quickstart", ["model.size=tiny"]).model
    small = load_experiment("quickstart", ["model.size=small"]).model
    assert tiny.d_model < small.d_model


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=0.1", "Did you mean 'lr'"),
        ("trian.lr=0.1", "Did you mean 'train'"),
        ("data.sorce=iu_xray", "Did you mean 'source'"),
        ("model.d_modle=64", "Did you mean 'd_model'"),
        ("data.synth.seeed=1", "Did you mean 'seed'"),
    ],
)
def test_unknown_key_names_nearest_valid_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_experiment("quickstart", [override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=many", "expected an integer"),
        ("train.lr=fast", "expected a number"),
        ("data.strict=maybe", "expected true or false"),
        ("train.loggers=jsonl", "expected a list"),
        ("train.precision=fp8", "fp32, bf16 or auto"),
        ("model.size=gigantic", "valid sizes"),
    ],
)
def test_wrong_values_are_errors(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_experiment("quickstart", [override])


def test_unknown_model_family_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="captioner"):
        load_experiment("quickstart", ["model.family=captioneer"])


def test_recipe_file_with_unknown_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz.*Did you mean 'epochs'"):
        load_experiment(bad)


def test_missing_recipe_lists_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="quickstart"):
        load_experiment("quickstrat")


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_overrides(["train.lr"])


def test_registry_errors_list_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    reg.add("beta", 2)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'alpha'.*Valid names: alpha, beta"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("alpha", 3)
