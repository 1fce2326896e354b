"""The experiment config: every section of a run, loaded from a recipe plus overrides.

A recipe is a YAML file of sections (`data`, `tokenizer`, `model`, `task`, `train`, `generation`) that sets only
fields that exist; the dataclasses hold every default. `model.family` and `model.size` choose the model family and
its size preset, and the remaining `model.*` keys override that preset; `task.*` sets the options of the family's
task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.config.loader import ConfigError, check_keys, from_dict, merge, parse_overrides, read_yaml, to_dict
from medvl.data.config import DataConfig, TokenizerConfig
from medvl.infer.config import GenerationConfig
from medvl.models.families import MODEL_FAMILIES, model_config_to_dict
from medvl.train.config import TrainConfig

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
DEFAULT_RECIPE = "quickstart"


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model_family: str = "captioner"
    model_size: str = "small"
    model: Any = None
    """The family's own config dataclass (e.g. `CaptionerConfig`)."""
    task: Any = None
    """The options of the task (its `options_class`, e.g. `ClassificationOptions`): the `task:` section."""
    task_name: str = ""
    """The task trained (`task.name` in a recipe): the family's default unless the recipe names another it allows."""
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": to_dict(self.data),
            "tokenizer": to_dict(self.tokenizer),
            "model": model_config_to_dict(self.model_family, self.model_size, self.model),
            "task": {"name": self.task_name, **(to_dict(self.task) if self.task is not None else {})},
            "train": to_dict(self.train),
            "generation": to_dict(self.generation),
        }


_SECTIONS = {"data": DataConfig, "tokenizer": TokenizerConfig, "train": TrainConfig, "generation": GenerationConfig}


def experiment_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Build and validate an `ExperimentConfig` from nested sections."""
    valid = [*_SECTIONS, "model", "task"]
    for key in raw:
        if key not in valid:
            from medvl.registry import suggest

            raise ConfigError(
                f"unknown config section {key!r}.{suggest(key, valid)} Valid sections: {', '.join(valid)}"
            )
    kwargs: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"config section {name!r} must be a mapping of fields, got {section!r}")
        kwargs[name] = from_dict(cls, section, name)
    model = dict(raw.get("model") or {})
    family_name = str(model.pop("family", "captioner"))
    family = MODEL_FAMILIES.get(family_name)
    size = str(model.pop("size", family.default_size))
    kwargs["model"] = family.make_config(size, model)
    from medvl.tasks import task_class

    task = dict(raw.get("task") or {})
    if not isinstance(raw.get("task") or {}, dict):
        raise ConfigError(f"config section 'task' must be a mapping of fields, got {raw.get('task')!r}")
    task_name = str(task.pop("name", "") or family.task)
    if task_name not in family.tasks:
        from medvl.registry import suggest

        raise ConfigError(
            f"task.name {task_name!r} is not a task of model family {family_name!r}."
            f"{suggest(task_name, list(family.tasks))} Its tasks: {', '.join(family.tasks)}"
        )
    task_cls = task_class(task_name)
    kwargs["task"] = from_dict(task_cls.options_class, task, "task")
    train = kwargs["train"]  # the best checkpoint is chosen on the task's metric unless the recipe names one
    kwargs["train"] = dataclasses.replace(
        train,
        select_metric=train.select_metric or task_cls.default_select_metric,
        select_mode=train.select_mode or task_cls.default_select_mode,
    )
    return ExperimentConfig(model_family=family_name, model_size=size, task_name=task_name, **kwargs)


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe given as a path, or as a name of a file in the repository's recipes/ folder."""
    path = Path(recipe)
    if path.is_file():
        return path
    for candidate in (Path("recipes") / f"{recipe}.yaml", REPO_RECIPES / f"{recipe}.yaml", REPO_RECIPES / str(recipe)):
        if candidate.is_file():
            return candidate
    names = sorted(p.stem for p in REPO_RECIPES.glob("*.yaml")) if REPO_RECIPES.is_dir() else []
    from medvl.registry import suggest

    raise ConfigError(
        f"recipe {str(recipe)!r} not found (neither a file nor a shipped recipe).{suggest(str(recipe), names)}"
        f" Shipped recipes: {', '.join(names) or 'none'}"
    )


def load_experiment(recipe: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load a recipe (default: the quickstart) and apply dotted overrides like `train.lr=3e-4`."""
    raw = read_yaml(resolve_recipe(recipe or DEFAULT_RECIPE))
    return experiment_from_dict(merge(raw, parse_overrides(overrides)))


def shipped_recipes() -> list[Path]:
    return sorted(REPO_RECIPES.glob("*.yaml"))


__all__ = [
    "ExperimentConfig",
    "ConfigError",
    "load_experiment",
    "experiment_from_dict",
    "resolve_recipe",
    "shipped_recipes",
    "check_keys",
]
