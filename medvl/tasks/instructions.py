"""Data of the instructed-generation task (`medvl.tasks.instructed_generation`): studies -> instruction examples of
each sub-task, their token ids, the candidate answer sets, and the batch.

A study serves every sub-task whose record it carries:
- caption: `report` -> target the report, instruction the caption prompt (BiomedGPT's " what does the image
  describe?");
- vqa: `question` + `answer` -> the question is the instruction, the answer the target;
- classification: `labels` -> the instruction is the classification prompt, the target a positive class name (a
  study with several positive classes gives one training example per class; one with none has the `none_class`
  name when the recipe sets one);
- summarization: a text-only study (`image_paths` empty) with `question` (the text) and `answer` (the summary) ->
  the summarization prompt with the text, the summary as target;
- mim (masked image modelling): any study with an image -> the image with its central region zeroed, the MIM
  prompt, and as target the VQ codes of that region (`medvl.tasks.mim`; computed by the dataset's `coder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from medvl.data.dataset import Skipped, StudyError, ViewLoader
from medvl.data.images import ImageLoadError
from medvl.data.study import Study

SUBTASKS = ("caption", "vqa", "classification", "summarization", "mim")
CONSTRAINED = ("vqa", "classification")
"""Sub-tasks whose answers come from a candidate set (trie-constrained when `task.constrain` is on)."""


def normalize_answer(text: str) -> str:
    """The VQA answer text trained, offered as a candidate and matched: the VQA v2 normalization of
    `medvl.evaluate.vqa.normalize_answer` (lower-case, punctuation, number words, articles)."""
    from medvl.evaluate.vqa import normalize_answer as vqa_normal

    return vqa_normal(text)


def positive_classes(study: Study, class_names: Sequence[str], none_class: str) -> list[str]:
    """The class names a study is positive for (the `none_class` name when it has none and one is set)."""
    labels = study.labels or {}
    positive = [n for n in class_names if labels.get(n) == 1]
    return positive or ([none_class] if none_class and none_class in class_names else [])


def subtasks_of(study: Study, enabled: Sequence[str]) -> list[str]:
    """The enabled sub-tasks this study can serve, in `enabled` order."""
    has_image = bool(study.image_paths)
    qa = bool(study.question.strip() and study.answer.strip())
    serves = {
        "caption": has_image and bool(study.report.strip()),
        "vqa": has_image and qa,
        "classification": has_image and bool(study.labels),
        "summarization": not has_image and qa,
        "mim": has_image,
    }
    return [name for name in enabled if serves[name]]


@dataclass(frozen=True)
class Example:
    """One instruction example: which study, which sub-task, the instruction and target texts."""

    study: int
    task: str
    instruction: str
    target: str
    """The target text (training) or the reference (evaluation)."""


def examples_of(
    studies: Sequence[Study],
    enabled: Sequence[str],
    prompts: dict[str, str],
    class_names: Sequence[str],
    none_class: str,
    training: bool,
) -> list[Example]:
    """Every example of `studies`; in evaluation one per (study, sub-task), in training one per classification
    target as well."""
    out = []
    for i, s in enumerate(studies):
        for task in subtasks_of(s, enabled):
            if task == "caption":
                out.append(Example(i, task, prompts["caption"], s.report.strip()))
            elif task == "vqa":
                question = " " + s.question.strip()
                out.append(Example(i, task, question, normalize_answer(s.answer)))
            elif task == "mim":
                out.append(Example(i, task, prompts["mim"], ""))  # the target codes come from the image
            elif task == "summarization":
                out.append(Example(i, task, prompts["summarization"].format(text=s.question.strip()), s.answer.strip()))
            else:
                positive = positive_classes(s, class_names, none_class)
                if not positive:
                    continue  # nothing to name: no positive class and no none_class
                for name in positive if training else positive[:1]:
                    out.append(Example(i, task, prompts["classification"], name))
    return out


@dataclass
class InstructionSample:
    id: str
    task: str
    image: np.ndarray | None
    """uint8 [S, S] or [S, S, C]; None for a text-only example."""
    source_ids: list[int]
    target_ids: list[int]
    """Target tokens + EOS (no BOS)."""
    target: str
    meta: dict[str, Any]


@dataclass
class InstructionBatch:
    """A batch of instruction examples, possibly of several sub-tasks (`tasks`)."""

    ids: list[str]
    tasks: list[str]
    images: torch.Tensor
    """float [B, C, S, S] in [0, 1] (zeros where `image_valid` is False)."""
    image_valid: torch.Tensor
    """bool [B]: False for a text-only example (the model then sees no image tokens)."""
    src_ids: torch.Tensor
    """long [B, S_src], right-padded instruction tokens."""
    src_mask: torch.Tensor
    """bool [B, S_src]."""
    target_ids: torch.Tensor
    """long [B, T]: target tokens + EOS, right-padded with the pad id."""
    target_mask: torch.Tensor
    """bool [B, T]."""
    targets: list[str]
    meta: list[dict[str, Any]]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> InstructionBatch:
        for name in ("images", "image_valid", "src_ids", "src_mask", "target_ids", "target_mask"):
            setattr(self, name, getattr(self, name).to(device, non_blocking=True))
        return self


def text_ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids


class InstructionDataset(torch.utils.data.Dataset):
    """Item i -> `InstructionSample` of `items[i]` (an `Example`), or `Skipped` when its image cannot be loaded.

    `studies[i]` is the study of item i, its id suffixed with "#<sub-task>" when a study serves several sub-tasks
    (the runner matches output rows to items by id). Training: `order` is the mixed epoch's list of example indices
    (`medvl.data.mixing.mixture_index`). A mim example's image has its central region zeroed and its target is
    `coder(image)` (code token ids) + EOS, computed once per example and kept."""

    def __init__(
        self,
        studies: Sequence[Study],
        examples: Sequence[Example],
        tokenizer: Any,
        views: ViewLoader,
        max_source: int,
        max_target: int,
        strict: bool,
        order: Sequence[int] | None = None,
        coder: Any = None,
    ) -> None:
        self.source = list(studies)
        self.examples = list(examples)
        self.order = list(order) if order is not None else list(range(len(self.examples)))
        self.tokenizer, self.views, self.strict = tokenizer, views, strict
        self.max_source, self.max_target = max_source, max_target
        several = {}
        for e in self.examples:
            several.setdefault(e.study, set()).add(e.task)
        self.studies = []
        for k in self.order:
            e = self.examples[k]
            s = self.source[e.study]
            self.studies.append(replace(s, id=f"{s.id}#{e.task}") if len(several[e.study]) > 1 else s)
        self._tokens: dict[int, tuple[list[int], list[int]]] = {}
        self.coder = coder
        self._codes: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.order)

    def tokens(self, k: int) -> tuple[list[int], list[int]]:
        """(instruction ids, target ids + EOS) of example k, cut to the configured lengths."""
        if k not in self._tokens:
            e, tok = self.examples[k], self.tokenizer
            src = text_ids(tok, e.instruction)[: self.max_source]
            tgt = text_ids(tok, e.target)[: self.max_target - 1] + [tok.eos_token_id]
            self._tokens[k] = (src, tgt)
        return self._tokens[k]

    def __getitem__(self, i: int) -> InstructionSample | Skipped:
        k = self.order[i]
        e, study = self.examples[k], self.studies[i]
        image = None
        if study.image_paths:
            try:
                image = self.views(self.source[e.study])[0]
            except ImageLoadError as err:
                if self.strict:
                    raise StudyError(f"study {study.id}: {err}") from err
                return Skipped(study.id, str(err))
        src, tgt = self.tokens(k)
        target = e.target
        if e.task == "mim" and image is not None:
            if self.coder is None:
                raise ValueError("a mim example needs the dataset's coder (the VQ image tokenizer, task.mim.tokenizer)")
            if k not in self._codes:
                self._codes[k] = self.coder(image)
            from medvl.tasks.mim import codes_text, mask_center

            tgt = [*self._codes[k], self.tokenizer.eos_token_id]
            target = codes_text(tgt, self.coder.code_offset, self.coder.n_codes)
            image = mask_center(image)
        s = self.source[e.study]
        meta = {**(s.meta or {}), "question": s.question}
        if e.task == "classification":
            meta["labels"] = dict(s.labels or {})
        return InstructionSample(study.id, e.task, image, src, tgt, target, meta)


def collate_instructions(items: Sequence[Any], pad_id: int, image_size: int, channels: int) -> InstructionBatch:
    samples = [x for x in items if isinstance(x, InstructionSample)]
    b = len(samples)
    images = torch.zeros(b, channels, image_size, image_size)
    valid = torch.zeros(b, dtype=torch.bool)
    for row, s in enumerate(samples):
        if s.image is not None:
            pixels = torch.from_numpy(np.ascontiguousarray(s.image)).float().div_(255.0)
            images[row] = pixels.permute(2, 0, 1) if pixels.ndim == 3 else pixels[None]
            valid[row] = True

    def pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), max(length, 1)), pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), max(length, 1), dtype=torch.bool)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[k, : len(r)] = True
        return ids, mask

    src_ids, src_mask = pad([s.source_ids for s in samples])
    tgt_ids, tgt_mask = pad([s.target_ids for s in samples])
    return InstructionBatch(
        [s.id for s in samples],
        [s.task for s in samples],
        images,
        valid,
        src_ids,
        src_mask,
        tgt_ids,
        tgt_mask,
        [s.target for s in samples],
        [s.meta for s in samples],
        [x for x in items if isinstance(x, Skipped)],
    )


def answer_sequences(tokenizer: Any, answers: Sequence[str]) -> list[list[int]]:
    """Token ids + EOS of each candidate answer (what the trie holds and `score_candidates` scores)."""
    return [text_ids(tokenizer, a) + [tokenizer.eos_token_id] for a in answers]


def pad_candidates(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """long [K, L] candidates right-padded with `pad_id` (each ends in EOS)."""
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    for k, s in enumerate(sequences):
        out[k, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return out


__all__ = [
    "CONSTRAINED",
    "SUBTASKS",
    "Example",
    "InstructionBatch",
    "InstructionDataset",
    "InstructionSample",
    "answer_sequences",
    "collate_instructions",
    "examples_of",
    "normalize_answer",
    "pad_candidates",
    "positive_classes",
    "subtasks_of",
    "text_ids",
]
