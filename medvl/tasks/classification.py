"""Image classification: multi-label (sigmoid, BCE) or multi-class (softmax, cross-entropy), on the one runner.

The task contract (`medvl.tasks.base.Task`):
- needs: `labels` (name -> 1 positive, 0 negative, -1 uncertain; a name a study lacks is missing);
- assets: the class names (`task.labels`, or every label name of the training studies, sorted) and, with
  `task.pos_weight=balanced`, each class's negatives/positives ratio on the training split; they set
  `model.num_outputs`; the checkpoint also records the decision thresholds chosen on validation;
- loss: multi-label BCE with logits over the known entries only (a missing label, or an uncertain one under
  U-Ignore, is masked out of the loss), optional positive weights; CheXpert's uncertainty policies (Irvin et al.
  2019): U-Ones (uncertain -> 1), U-Zeros (-> 0), U-Ignore (masked). Multi-class: cross-entropy with label
  smoothing over the studies that have exactly one positive class;
- validation: loss, macro AUROC / AP (scikit-learn) and F1 at thresholds chosen there (`auroc_macro` selects the
  best checkpoint);
- evaluation: `medvl.evaluate.classification` on the evaluated split with thresholds chosen on validation, per-class
  AUROC/AP/F1, accuracy and balanced accuracy, macro and micro means with bootstrap 95% intervals, next to the
  prevalence baseline; report.html with ROC curves;
- prediction record: {"probabilities": {class: p}, "labels": [classes at or above their threshold]} (multi-class:
  the most probable class);
- saliency: the logit of the most probable class.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvl.data.dataset import Skipped, StudyDataset, TargetBatch, ViewLoader, collate_views
from medvl.data.study import Study
from medvl.tasks.base import Task

UNCERTAIN_POLICIES = ("ignore", "ones", "zeros")


@dataclass
class ClassificationOptions:
    """The `task:` section of a classification recipe."""

    labels: list[str] = field(default_factory=list)
    """Label names to predict, in output order; empty = every label name of the training studies, sorted."""
    multi_label: bool = True
    """True: independent sigmoid per label (findings); False: softmax over the labels as mutually exclusive classes."""
    uncertain: str = "ignore"
    """CheXpert's uncertainty policy for labels given as -1: ignore (U-Ignore, masked from the loss), ones (U-Ones)
    or zeros (U-Zeros)."""
    pos_weight: str = "none"
    """none, or balanced: weight each label's positives by negatives/positives on the training split (multi-label)."""
    label_smoothing: float = 0.0
    """Label smoothing (multi-class: as torch's cross-entropy; multi-label: targets pulled towards 0.5)."""
    augment: bool = False
    """Random affine jitter of the training views (scale 0.9-1.1, rotation up to 7 degrees, shift up to 6%) and
    contrast/brightness jitter (up to 10%); no flips, which would move the heart. Validation and test are not
    augmented."""

    def __post_init__(self) -> None:
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(f"task.uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got {self.uncertain!r}")
        if self.pos_weight not in ("none", "balanced"):
            raise ValueError(f"task.pos_weight must be none or balanced, got {self.pos_weight!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class ClassSample:
    id: str
    images: np.ndarray
    """uint8 [V, H, W] or [V, H, W, C]."""
    view_ids: list[int]
    targets: np.ndarray
    """int8 [C]: 1 / 0, -1 where unknown (missing, or uncertain under U-Ignore)."""


ClassificationBatch = TargetBatch
"""Its batch: views and one target row per study (`medvl.data.dataset.TargetBatch`)."""


def study_targets(study: Study, names: Sequence[str], uncertain: str, one_of: bool = False) -> np.ndarray:
    """int8 [len(names)] targets of a study under the uncertainty policy (-1 = unknown). `one_of` (multi-class): a
    study none of whose positive labels is among `names` (a class the model does not know) gets all -1, unscored;
    otherwise every class but its positive is 0."""
    labels = study.labels or {}
    out = np.full(len(names), -1, dtype=np.int8)
    for k, name in enumerate(names):
        value = labels.get(name)
        if value is None:
            continue
        if value == -1:
            value = {"ones": 1, "zeros": 0, "ignore": -1}[uncertain]
        out[k] = 1 if value == 1 else (0 if value == 0 else -1)
    if one_of:  # one class per study: the known positive makes every other class negative, stated or not
        out[:] = np.where(out == 1, 1, 0) if (out == 1).any() else -1
    return out


def jitter_views(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random affine (scale, rotation, shift) and intensity jitter of uint8 views [V, S, S] or [V, S, S, C]."""
    from PIL import Image

    out = np.empty_like(images)
    size = images.shape[1]
    for v, view in enumerate(images):
        angle, scale = rng.uniform(-7, 7), rng.uniform(0.9, 1.1)
        dx, dy = rng.uniform(-0.06, 0.06, size=2) * size
        img = Image.fromarray(view).rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy))
        if scale != 1.0:
            side = int(round(size * scale))
            img = img.resize((side, side), Image.Resampling.BILINEAR)
            left = (side - size) // 2
            img = img.crop((left, left, left + size, left + size))
        pixels = np.asarray(img, dtype=np.float32) * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1) * 255
        out[v] = np.clip(pixels, 0, 255).astype(np.uint8)
    return out


class ClassificationDataset(StudyDataset):
    def __init__(
        self,
        studies: Sequence[Study],
        views: ViewLoader,
        names: Sequence[str],
        uncertain: str,
        strict: bool,
        augment: bool = False,
        one_of: bool = False,
    ) -> None:
        super().__init__(studies, views, strict)
        self.targets = [study_targets(s, names, uncertain, one_of) for s in self.studies]
        self.augment = augment

    def encode(self, i: int, images: np.ndarray) -> ClassSample:
        study = self.studies[i]
        if self.augment and (
            images.ndim == 3 or images.shape[-1] == 3
        ):  # seeded from torch's RNG, whose state checkpoints carry: resumed runs jitter alike
            images = jitter_views(images, np.random.default_rng(int(torch.randint(0, 2**62, ()).item())))
        return ClassSample(study.id, images, list(study.view_ids[: self.views.max_views]), self.targets[i])


class ClassificationTask(Task):
    name = "classification"
    needs = ("labels",)
    options_class = ClassificationOptions
    default_select_metric = "auroc_macro"
    default_select_mode = "max"
    endpoint = "classifications"
    prediction_fields = {
        "probabilities": (dict[str, float], "class -> probability (sigmoid per label, or softmax over classes)"),
        "labels": (list[str], "classes at or above their decision threshold (multi-class: the most probable)"),
    }
    headline_metrics = ("loss", "auroc_macro", "ap_macro", "f1_macro")

    def __init__(self, model: nn.Module, assets: Any, cfg: Any = None) -> None:
        super().__init__(model, assets, cfg)
        self.class_names: list[str] = list(assets["class_names"])
        self.thresholds: list[float] = list(assets.get("thresholds") or [0.5] * len(self.class_names))
        weights = assets.get("pos_weight")
        self.pos_weight = torch.tensor(weights, dtype=torch.float32) if weights else None

    # ------------------------------------------------------------------------------------------------ assets
    @classmethod
    def build_assets(cls, cfg: Any, train: Sequence[Study], save_dir: Path | None) -> dict[str, Any]:
        opts: ClassificationOptions = cfg.task
        seen = sorted({name for s in train for name in (s.labels or {})})
        names = list(opts.labels) or seen
        unknown = [n for n in names if n not in seen]
        if unknown:
            raise ValueError(
                f"task.labels {unknown} are not labels of the training studies (they have: {', '.join(seen) or 'none'})"
            )
        if not names:
            raise ValueError(
                "the training studies carry no labels: classification needs a source with labels "
                "(nih, chexpert, image_folder, a manifest with labels, synthetic)"
            )
        targets = np.stack([study_targets(s, names, opts.uncertain) for s in train])
        positives = (targets == 1).sum(0)
        if not opts.labels:  # a class no training study shows cannot be learned: leave it out, and say so
            empty = [n for n, p in zip(names, positives, strict=True) if p == 0]
            if empty:
                print(
                    f"classification: leaving out {', '.join(empty)}: no training study is positive for it",
                    file=sys.stderr,
                )
                names = [n for n in names if n not in empty]
                targets, positives = targets[:, [n not in empty for n in seen]], positives[positives > 0]
        else:
            for name, count in zip(names, positives, strict=True):
                if count == 0:
                    print(
                        f"classification: task.labels {name!r} has no positive training study; its scores will "
                        "mean nothing",
                        file=sys.stderr,
                    )
        if not opts.multi_label:
            several = [s.id for s, row in zip(train, targets, strict=True) if (row == 1).sum() > 1]
            if several:
                raise ValueError(
                    f"task.multi_label=false needs one positive class per study, but {len(several)} "
                    f"training studies have several (e.g. {several[0]}); use task.multi_label=true, or "
                    "task.labels with mutually exclusive classes"
                )
        assets: dict[str, Any] = {"class_names": names}
        if opts.pos_weight == "balanced":
            pos, neg = (targets == 1).sum(0), (targets == 0).sum(0)
            assets["pos_weight"] = [float(n / p) if p else 1.0 for p, n in zip(pos, neg, strict=True)]
        return assets

    @classmethod
    def assets_from_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        return {k: metadata.get(k) for k in ("class_names", "thresholds", "pos_weight")}

    @classmethod
    def model_fields(cls, assets: Any) -> dict[str, Any]:
        return {"num_outputs": len(assets["class_names"])}

    def metadata(self) -> dict[str, Any]:
        weights = self.pos_weight.tolist() if self.pos_weight is not None else None
        return {"class_names": self.class_names, "thresholds": self.thresholds, "pos_weight": weights}

    # -------------------------------------------------------------------------------------------------- data
    def dataset(self, studies: Sequence[Study], training: bool = False) -> ClassificationDataset:
        if not training:
            self.check_label_names(studies)
        mc = self.cfg.model
        views = ViewLoader(mc.image_size, mc.max_views, mc.in_chans, self.cfg.data.cache_images)
        return ClassificationDataset(
            studies,
            views,
            self.class_names,
            self.options.uncertain,
            self.cfg.data.strict,
            augment=training and self.options.augment,
            one_of=not self.options.multi_label,
        )

    def check_label_names(self, studies: Sequence[Study]) -> None:
        """Compare the label names of `studies` (e.g. another data set given to `medvl evaluate --data-root`) with
        the model's classes: no name in common is an error (nothing could be scored); names on one side only are
        said once on stderr (data labels the model lacks are ignored; classes the data lacks are not scored).

        Raises:
            ValueError: the studies carry labels, but none under a name of the model's classes.
        """
        in_data = sorted({name for s in studies for name in (s.labels or {})})
        if not in_data:
            return
        known = set(self.class_names)
        unknown = [n for n in in_data if n not in known]
        absent = [n for n in self.class_names if n not in set(in_data)]
        if len(unknown) == len(in_data):
            raise ValueError(
                f"none of the data's label names ({', '.join(in_data[:8])}"
                f"{', ...' if len(in_data) > 8 else ''}) is a class of this model "
                f"({', '.join(self.class_names[:8])}{', ...' if len(self.class_names) > 8 else ''}): "
                "evaluate on data labelled with the model's classes, or train a model on these labels"
            )
        if unknown:
            print(
                f"note: the data's labels {', '.join(unknown)} are not classes of this model; they are ignored",
                file=sys.stderr,
            )
        if absent:
            print(
                f"note: the model's classes {', '.join(absent)} are not labelled in this data; they are not scored",
                file=sys.stderr,
            )

    def collate(self, items: Sequence[Any]) -> ClassificationBatch:
        samples = [x for x in items if isinstance(x, ClassSample)]
        images, view_ids, view_mask = collate_views(samples, self.cfg.model.max_views)
        k = len(self.class_names)
        targets = (
            torch.from_numpy(np.stack([s.targets for s in samples]).astype(np.int64))
            if samples
            else torch.zeros(0, k, dtype=torch.long)
        )
        return ClassificationBatch(
            [s.id for s in samples], images, view_ids, view_mask, targets, [x for x in items if isinstance(x, Skipped)]
        )

    # ------------------------------------------------------------------------------------------------- train
    def _logits(self, batch: ClassificationBatch) -> torch.Tensor:
        return self.model(batch.images, batch.view_ids, batch.view_mask).float()

    def __call__(self, batch: ClassificationBatch) -> dict[str, torch.Tensor]:
        logits, targets = self._logits(batch), batch.targets
        smoothing = self.options.label_smoothing
        if not self.options.multi_label:
            one = (targets == 1).sum(1) == 1  # studies with exactly one positive class
            index = torch.where(one, targets.clamp_min(0).argmax(1), torch.full_like(one, -100, dtype=torch.long))
            loss = (
                F.cross_entropy(logits, index, ignore_index=-100, label_smoothing=smoothing)
                if one.any()
                else logits.sum() * 0.0
            )
            return {"loss": loss, "weight": one.sum()}
        known = targets >= 0
        y = targets.clamp_min(0).float() * (1 - smoothing) + 0.5 * smoothing
        pos_weight = self.pos_weight.to(logits.device) if self.pos_weight is not None else None
        per_entry = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight, reduction="none")
        n = known.sum()
        loss = (per_entry * known).sum() / n.clamp_min(1)
        return {"loss": loss, "weight": n}

    def probabilities(self, batch: ClassificationBatch) -> np.ndarray:
        logits = self._logits(batch)
        probs = torch.sigmoid(logits) if self.options.multi_label else logits.softmax(-1)
        return probs.detach().cpu().numpy()

    # ------------------------------------------------------------------------------------ validate / evaluate
    @torch.no_grad()
    def outputs(self, batch: ClassificationBatch) -> list[dict[str, Any]]:
        probs, targets = self.probabilities(batch), batch.targets.cpu().numpy()
        return [{"id": sid, "probs": probs[k], "targets": targets[k]} for k, sid in enumerate(batch.ids)]

    def _metrics(
        self, rows: Sequence[dict[str, Any]], thresholds: Sequence[float] | None, bootstrap: int, seed: int = 0
    ) -> dict[str, Any]:
        from medvl.evaluate.classification import classification_metrics

        probs = np.stack([r["probs"] for r in rows])
        targets = np.stack([r["targets"] for r in rows]).astype(np.int64)
        if not self.options.multi_label:
            thresholds = None  # multi-class predicts the most probable class
        return classification_metrics(
            probs,
            targets,
            self.class_names,
            self.options.multi_label,
            thresholds=None if thresholds is None else np.asarray(thresholds),
            bootstrap=bootstrap,
            seed=seed,
        )

    def _thresholds(self, rows: Sequence[dict[str, Any]]) -> list[float]:
        from medvl.evaluate.classification import choose_thresholds

        if not rows or not self.options.multi_label:
            return [0.5] * len(self.class_names)
        return [
            float(t)
            for t in choose_thresholds(
                np.stack([r["probs"] for r in rows]), np.stack([r["targets"] for r in rows]).astype(np.int64)
            )
        ]

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        if not rows:
            return {}
        self.thresholds = self._thresholds(rows)  # recorded in the checkpoints written after this validation
        result = self._metrics(rows, self.thresholds, bootstrap=0)
        flat = {
            k: float(v)
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("n_examples", "n_ignored")
        }
        for name, per_class in result["per_class"].items():  # e.g. auroc/Abnormal: a recipe may select on one class
            if per_class.get("auroc") is not None:
                flat[f"auroc/{name}"] = float(per_class["auroc"])
        return flat

    def eval_splits(self, split: str, available: Sequence[str]) -> list[str]:
        return (["val"] if "val" in available and split != "val" else []) + [split]

    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from medvl.evaluate.classification import baseline_probs

        rows = list(outputs.values())[-1]
        val = outputs.get("val") if len(outputs) > 1 else None
        thresholds = self._thresholds(val) if val else self.thresholds
        result = self._metrics(rows, thresholds, options.bootstrap, options.seed)
        result["thresholds_from"] = "validation split" if val else "the checkpoint (chosen at its validation)"
        train = studies.get("train", [])
        if train:
            train_targets = np.stack(
                [
                    study_targets(s, self.class_names, self.options.uncertain, not self.options.multi_label)
                    for s in train
                ]
            )
            base_rows = [
                {"probs": p, "targets": r["targets"]}
                for p, r in zip(
                    baseline_probs(train_targets.astype(np.int64), len(rows), self.options.multi_label),
                    rows,
                    strict=True,
                )
            ]
            base = self._metrics(base_rows, None, 0)
            result["baseline"] = {k: v for k, v in base.items() if isinstance(v, (int, float)) and v is not None}
            result["baseline_name"] = "prevalence" if self.options.multi_label else "majority class"
        paths = {s.id: [str(p) for p in s.image_paths] for split in studies.values() for s in split}
        predictions = []
        for r in rows:
            record = self._record(r["probs"], thresholds)
            predictions.append(
                {
                    "id": r["id"],
                    "image_paths": paths.get(r["id"], []),
                    **record,
                    "predicted": record.pop("labels"),
                    "labels": {n: int(t) for n, t in zip(self.class_names, r["targets"], strict=True)},
                }
            )
        return result, predictions

    def write_evaluation(
        self, out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: Any, title: str
    ) -> None:
        super().write_evaluation(out, result, rows, options, title)
        if options.html:
            from medvl.evaluate.classification_report import write_classification_report

            write_classification_report(out / "report.html", result, rows, title, baseline=result.get("baseline"))

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        from medvl.evaluate.classification_report import format_classification_tables

        return format_classification_tables(result, baseline=result.get("baseline"))

    # ---------------------------------------------------------------------------------------------- inference
    def inference_batch(self, studies: Sequence[Any]) -> ClassificationBatch:
        k = len(self.class_names)
        return self.collate([ClassSample(s.id, s.pixels, s.view_ids, np.full(k, -1, np.int8)) for s in studies])

    def _record(self, probs: np.ndarray, thresholds: Sequence[float]) -> dict[str, Any]:
        named = {n: round(float(p), 6) for n, p in zip(self.class_names, probs, strict=True)}
        if self.options.multi_label:
            labels = [n for n, p, t in zip(self.class_names, probs, thresholds, strict=True) if p >= t]
        else:
            labels = [self.class_names[int(np.argmax(probs))]]
        return {"probabilities": named, "labels": labels}

    @torch.no_grad()
    def predict(self, batch: ClassificationBatch) -> list[dict[str, Any]]:
        return [self._record(p, self.thresholds) for p in self.probabilities(batch)]

    def explain_score(self, batch: ClassificationBatch, record: dict[str, Any]) -> torch.Tensor:
        probs = record["probabilities"]
        index = self.class_names.index(max(probs, key=probs.get))
        return self._logits(batch)[:, index].sum()


__all__ = ["ClassificationBatch", "ClassificationOptions", "ClassificationTask", "study_targets"]
