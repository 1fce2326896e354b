"""The explicit table of model families.

A family knows its config dataclass, its size presets, how to build the `nn.Module` and which tasks train it (the
default, or another the recipe names in `task.name`). A family's model config carries the image fields the data path
reads: `image_size`, `in_chans`, `max_views`.
Family modules are imported only when a family is used, so `import medvl` stays cheap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from medvl.config.loader import ConfigError, check_keys, from_dict
from medvl.registry import Registry


@dataclass(frozen=True)
class ModelFamily:
    name: str
    config_class: Callable[[], type]
    """Returns the family's config dataclass (a callable so the module is imported lazily)."""
    presets: Callable[[], dict[str, dict[str, Any]]]
    """Returns size name -> field values."""
    build: Callable[[Any], nn.Module]
    task: str
    """Name in `medvl.tasks.TASKS` of the task that trains this family by default."""
    default_size: str
    reload_config: Callable[[Any], Any] = lambda config: config
    """Config -> the config to rebuild a trained model from a checkpoint (e.g. without pretrained-weight paths)."""
    upgrade_fields: Callable[[dict[str, Any]], dict[str, Any]] = lambda fields: fields
    """Model fields -> the same in today's names (renamed fields of older checkpoints and recipes)."""
    other_tasks: tuple[str, ...] = ()
    """Further tasks the family's models can be trained for, chosen by a recipe's `task.name` (e.g. a classifier
    head regressing coordinates)."""

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task this family can run, the default first."""
        return (self.task, *self.other_tasks)

    def make_config(self, size: str | None, fields: dict[str, Any], where: str = "model") -> Any:
        """Preset `size` with `fields` on top, validated against the family's dataclass."""
        cls = self.config_class()
        presets = self.presets()
        size = size or self.default_size
        if size not in presets:
            raise ConfigError(
                f"unknown {where}.size {size!r} for family {self.name!r}; valid sizes: {', '.join(presets)}"
            )
        fields = self.upgrade_fields(fields)
        check_keys(cls, list(fields), where)
        return from_dict(cls, {**presets[size], **fields}, where)


def _captioner_config() -> type:
    from medvl.models.captioner import CaptionerConfig

    return CaptionerConfig


def _captioner_presets() -> dict[str, dict[str, Any]]:
    from medvl.models.captioner import CAPTIONER_SIZES

    return CAPTIONER_SIZES


def _captioner_reload_config(config: Any) -> Any:
    from medvl.models.captioner import config_for_reload

    return config_for_reload(config)


def _build_captioner(config: Any) -> nn.Module:
    from medvl.models.captioner import Captioner

    return Captioner(config)


def _xraygpt_config() -> type:
    from medvl.models.xraygpt import XrayGPTConfig

    return XrayGPTConfig


def _xraygpt_presets() -> dict[str, dict[str, Any]]:
    from medvl.models.xraygpt import XRAYGPT_SIZES

    return XRAYGPT_SIZES


def _xraygpt_upgrade(fields: dict[str, Any]) -> dict[str, Any]:
    from medvl.models.xraygpt import upgrade_fields

    return upgrade_fields(fields)


def _build_xraygpt(config: Any) -> nn.Module:
    from medvl.models.xraygpt import XrayGPT

    return XrayGPT(config)


def _classifier_config() -> type:
    from medvl.models.classifier import ClassifierConfig

    return ClassifierConfig


def _classifier_presets() -> dict[str, dict[str, Any]]:
    from medvl.models.classifier import CLASSIFIER_SIZES

    return CLASSIFIER_SIZES


def _classifier_reload_config(config: Any) -> Any:
    from medvl.models.classifier import config_for_reload

    return config_for_reload(config)


def _build_classifier(config: Any) -> nn.Module:
    from medvl.models.classifier import ImageClassifier

    return ImageClassifier(config)


def _mae_config() -> type:
    from medvl.models.mae import MAEConfig

    return MAEConfig


def _mae_presets() -> dict[str, dict[str, Any]]:
    from medvl.models.mae import MAE_SIZES

    return MAE_SIZES


def _mae_reload_config(config: Any) -> Any:
    from medvl.models.mae import config_for_reload

    return config_for_reload(config)


def _build_mae(config: Any) -> nn.Module:
    from medvl.models.mae import MaskedVideoViT

    return MaskedVideoViT(config)


def _unified_config() -> type:
    from medvl.models.unified.config import UnifiedConfig

    return UnifiedConfig


def _unified_presets() -> dict[str, dict[str, Any]]:
    from medvl.models.unified.config import UNIFIED_SIZES

    return UNIFIED_SIZES


def _unified_reload_config(config: Any) -> Any:
    from medvl.models.unified.config import config_for_reload

    return config_for_reload(config)


def _build_unified(config: Any) -> nn.Module:
    from medvl.models.unified.model import UnifiedModel

    return UnifiedModel(config)


def _vq_config() -> type:
    from medvl.models.vq.config import VQConfig

    return VQConfig


def _vq_presets() -> dict[str, dict[str, Any]]:
    from medvl.models.vq.config import VQ_SIZES

    return VQ_SIZES


def _build_vq(config: Any) -> nn.Module:
    from medvl.models.vq.model import VQModel

    return VQModel(config)


MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family")
MODEL_FAMILIES.add(
    "captioner",
    ModelFamily(
        "captioner",
        _captioner_config,
        _captioner_presets,
        _build_captioner,
        task="report_generation",
        default_size="small",
        reload_config=_captioner_reload_config,
    ),
)
MODEL_FAMILIES.add(
    "xraygpt",
    ModelFamily(
        "xraygpt",
        _xraygpt_config,
        _xraygpt_presets,
        _build_xraygpt,
        task="instructed_report",
        default_size="small",
        upgrade_fields=_xraygpt_upgrade,
        other_tasks=("qformer_pretraining",),
    ),
)
MODEL_FAMILIES.add(
    "classifier",
    ModelFamily(
        "classifier",
        _classifier_config,
        _classifier_presets,
        _build_classifier,
        task="classification",
        default_size="small",
        reload_config=_classifier_reload_config,
        other_tasks=("regression",),
    ),
)
MODEL_FAMILIES.add(
    "mae",
    ModelFamily(
        "mae",
        _mae_config,
        _mae_presets,
        _build_mae,
        task="masked_modeling",
        default_size="base",
        reload_config=_mae_reload_config,
        other_tasks=("classification", "regression"),
    ),
)
# BiomedGPT/OFA: one encoder-decoder for report writing, VQA, classification and summarization by instruction.
MODEL_FAMILIES.add(
    "unified",
    ModelFamily(
        "unified",
        _unified_config,
        _unified_presets,
        _build_unified,
        task="instructed_generation",
        default_size="tiny",
        reload_config=_unified_reload_config,
    ),
)

# A VQ image tokenizer (VQ-VAE, taming-transformers' VQModel layout): the codes the unified family's MIM predicts.
MODEL_FAMILIES.add(
    "vq",
    ModelFamily("vq", _vq_config, _vq_presets, _build_vq, task="vq_tokenizer", default_size="tiny"),
)


def model_config_to_dict(family: str, size: str, config: Any) -> dict[str, Any]:
    return {"family": family, "size": size, **dataclasses.asdict(config)}
