"""Instructed generation (BiomedGPT / OFA): every sub-task is text generation chosen by the instruction.

The task contract (`medvl.tasks.base.Task`) for the `unified` family; the examples of each sub-task (caption, vqa,
classification, summarization, mim) are built in `medvl.tasks.instructions`:
- assets: one byte-level BPE tokenizer fitted on every training text (reports, questions, answers, class names,
  prompts), the candidate answers (train + val answers, normalized) and the class names; all in checkpoint metadata;
  with the mim sub-task, the frozen VQ image tokenizer (`task.mim.tokenizer`), whose K codes take the token ids
  len(tokenizer) .. len(tokenizer) + K - 1 (`medvl.tasks.mim`);
- data: a training epoch mixes the sub-tasks by `task.weights` (`medvl.data.mixing.mixture_index`, seeded by
  `train.seed`); evaluation takes one example per (study, sub-task);
- loss: label-smoothed cross-entropy (`train.label_smoothing`; BiomedGPT uses 0.1) over BOS + target, answers of
  vqa/classification constrained to their candidate trie when `task.constrain` is on (logits outside the allowed
  tokens masked, smoothing over the allowed tokens only), mim targets always to the code range then EOS, optional
  drop-worst (`task.drop_worst_ratio` after `task.drop_worst_after` updates) and R-Drop (`task.r_drop_alpha`); the
  loss is the mean over the sub-tasks in the batch of each one's per-token loss (`medvl.data.mixing.per_task_mean`);
- evaluation per sub-task: caption/summarization through `medvl.evaluate.reports`; vqa accuracy closed/open/overall
  with the majority-answer baseline (`medvl.evaluate.vqa`), answers decoded by beam search under the trie or by
  scoring every candidate (`task.candidate_decoding`); classification by scoring every class name, softmaxed, through
  `medvl.evaluate.classification`; mim: code accuracy of the generated grid and the per-code NLL next to log K
  (uniform over the codes) and the split's code-frequency entropy (`medvl.tasks.mim.mim_metrics`);
- prediction record: {"task", "text"} (a question in the request selects vqa, else `task.predict_task`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medvl.data.dataset import ViewLoader
from medvl.data.mixing import mixture_index, per_task_mean
from medvl.data.study import Study
from medvl.data.tokenizer import (
    decode_report,
    load_tokenizer,
    special_tokens,
    tokenizer_from_json,
    tokenizer_to_json,
    train_bpe_tokenizer,
)
from medvl.infer.config import GenerationConfig
from medvl.models.unified.loss import label_smoothed_nll, r_drop_kl
from medvl.tasks import instructed_eval
from medvl.tasks.base import Task
from medvl.tasks.instructed_options import InstructedGenerationOptions
from medvl.tasks.instructions import (
    CONSTRAINED,
    SUBTASKS,
    InstructionBatch,
    InstructionDataset,
    InstructionSample,
    answer_sequences,
    collate_instructions,
    examples_of,
    normalize_answer,
    pad_candidates,
    positive_classes,
    subtasks_of,
    text_ids,
)
from medvl.tasks.mim import MIMOptions, allowed_codes, code_mask, codes_text

IGNORE = -100


class InstructedGenerationTask(Task):
    name = "instructed_generation"
    options_class = InstructedGenerationOptions
    endpoint = "generations"
    takes_text_only = True  # summarization reads studies without images
    prediction_fields = {
        "task": (str, "the sub-task answered: caption, vqa, classification or summarization"),
        "text": (str, "the generated text (report, answer, class name or summary)"),
    }
    headline_metrics = ("loss", "vqa_accuracy", "classification_accuracy", "caption_bleu_4")

    def __init__(self, model: nn.Module, assets: Any, cfg: Any = None) -> None:
        super().__init__(model, assets, cfg)
        self.tokenizer = assets["tokenizer"]
        self.answers: list[str] = list(assets["answers"])
        self.class_names: list[str] = list(assets["class_names"])
        self.multi_label: bool = bool(assets.get("multi_label", False))
        self.label_smoothing = self.cfg.train.label_smoothing
        self.generation: GenerationConfig = self.cfg.generation
        self._tries: dict[str, Any] = {}
        self.n_codes: int = int(assets.get("n_codes", 0))
        self.code_offset: int = len(self.tokenizer)
        self._coder: Any = assets.get("coder")
        # Validation reports a sub-task's metrics only when it is trained: say so now, not at the first validation.
        metric, tasks = self.cfg.train.select_metric, self.options.tasks
        if metric.split("_")[0] in SUBTASKS and metric.split("_")[0] not in tasks:
            named = [m for m in self.headline_metrics if m == "loss" or m.split("_")[0] in tasks]
            raise ValueError(
                f"train.select_metric={metric} is a metric of the {metric.split('_')[0]} sub-task, which "
                f"task.tasks={tasks} leaves out; choose one that is validated, e.g. train.select_metric="
                f"{named[-1]}" + (" train.select_mode=max" if named[-1] != "loss" else " train.select_mode=min")
            )
        self.updates = 0
        """Training forward passes / grad_accum so far in this process (drop-worst starts after
        `task.drop_worst_after`; it restarts at 0 when a run resumes)."""

    def scores_text(self) -> bool:
        return bool({"caption", "summarization"} & set(self.options.tasks))

    # ------------------------------------------------------------------------------------------------ assets
    @classmethod
    def usable(cls, study: Study) -> str:
        return (
            ""
            if subtasks_of(study, SUBTASKS)
            else "no report, question/answer, labels or text to summarize (task instructed_generation needs one)"
        )

    @classmethod
    def build_assets(cls, cfg: Any, train: Sequence[Study], save_dir: Path | None) -> dict[str, Any]:
        opts: InstructedGenerationOptions = cfg.task
        val: list[Study] = []
        if "vqa" in opts.tasks:  # the candidate set is train + val answers (as OFA's trainval_ans2label)
            from medvl.data.sources import load_studies

            val = load_studies(cfg.data).get("val", [])
        answers = sorted({normalize_answer(s.answer) for s in [*train, *val] if "vqa" in subtasks_of(s, opts.tasks)})
        class_names: list[str] = []
        multi_label = False
        if "classification" in opts.tasks:
            seen = sorted({n for s in train for n, v in (s.labels or {}).items() if v == 1})
            unknown = [n for n in opts.class_names if n not in seen]
            if unknown:
                raise ValueError(
                    f"task.class_names {unknown} are positive in no training study (labels seen: "
                    f"{', '.join(seen) or 'none'}, in {len(train)} studies): train on more studies "
                    "(data.max_studies keeps each split's first N) or leave them out of task.class_names"
                )
            class_names = list(opts.class_names) or seen
            if opts.none_class and any(not positive_classes(s, class_names, "") for s in train if s.labels):
                class_names.append(opts.none_class)
            if len(class_names) < 2:  # a constrained answer with one candidate is always right: nothing to learn
                raise ValueError(
                    f"the classification sub-task needs at least 2 class names, the training studies give "
                    f"{class_names or 'none'} ({len(train)} studies): train on more studies (data.max_studies), "
                    "name the classes in task.class_names, or set task.none_class for studies with no positive label"
                )
            multi_label = any(len(positive_classes(s, class_names, "")) > 1 for s in train)
        tc = cfg.tokenizer
        if tc.path:
            tok = load_tokenizer(tc.path)
        elif save_dir is None:
            tok = load_tokenizer(str(Path(cfg.train.output_dir) / "tokenizer"))
        else:
            texts = [t for s in train for t in (s.report, s.question, s.answer) if t]
            texts += [*answers, *class_names, *opts.prompts().values()]
            tok = train_bpe_tokenizer(texts, vocab_size=tc.vocab_size, min_frequency=tc.min_frequency)
            tok.save_pretrained(str(save_dir / "tokenizer"))
        assets = {"tokenizer": tok, "answers": answers, "class_names": class_names, "multi_label": multi_label}
        if "mim" in opts.tasks:  # load it now: a wrong path or config fails before the model is built
            coder = cls._load_coder(opts.mim, len(tok), save_dir is not None)
            coder.grid(cfg.model.image_size)
            assets |= {"coder": coder, "n_codes": coder.n_codes}
        return assets

    @staticmethod
    def _load_coder(mim: MIMOptions, code_offset: int, verbose: bool) -> Any:
        from medvl.models.vq.checkpoint import load_vq_tokenizer
        from medvl.tasks.mim import ImageCoder

        vq, line = load_vq_tokenizer(mim.tokenizer, mim.tokenizer_config, mim.tokenizer_model)
        if verbose:
            print(line)
        return ImageCoder(vq, code_offset, mim.code_image_size)

    @property
    def coder(self) -> Any:
        """The MIM sub-task's `ImageCoder` (the frozen VQ tokenizer), loaded on first use."""
        if self._coder is None:
            self._coder = self._load_coder(self.options.mim, self.code_offset, False)
            if self._coder.n_codes != self.n_codes:
                raise ValueError(
                    f"task.mim.tokenizer has {self._coder.n_codes} codes, the model was trained with {self.n_codes}"
                )
        return self._coder

    @classmethod
    def assets_from_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        tok = tokenizer_from_json(metadata["tokenizer"], metadata.get("tokenizer_specials"))
        return {
            "tokenizer": tok,
            "answers": metadata.get("answers", []),
            "class_names": metadata.get("class_names", []),
            "multi_label": metadata.get("multi_label", False),
            "n_codes": metadata.get("n_codes", 0),
        }

    @classmethod
    def model_fields(cls, assets: Any) -> dict[str, Any]:
        vocab = len(assets["tokenizer"]) + int(assets.get("n_codes", 0))  # the image codes follow the text tokens
        return {"vocab_size": vocab, "pad_id": assets["tokenizer"].pad_token_id}

    def metadata(self) -> dict[str, Any]:
        return {
            "tokenizer": tokenizer_to_json(self.tokenizer),
            "tokenizer_specials": special_tokens(self.tokenizer),
            "answers": self.answers,
            "class_names": self.class_names,
            "multi_label": self.multi_label,
            "n_codes": self.n_codes,
        }

    # -------------------------------------------------------------------------------------------------- data
    def dataset(self, studies: Sequence[Study], training: bool = False) -> InstructionDataset:
        opts, mc = self.options, self.cfg.model
        examples = examples_of(studies, opts.tasks, opts.prompts(), self.class_names, opts.none_class, training)
        if training and not examples:
            named = [t for t in SUBTASKS if t != "mim"]  # any image serves mim: naming it would not help
            served = sorted({t for s in studies for t in subtasks_of(s, named)}, key=SUBTASKS.index)
            way_out = (
                f"these studies serve {', '.join(served)}: set task.tasks=[{','.join(served)}]"
                if served
                else "they carry no report, question/answer, labels or text-only question/answer"
            )
            raise ValueError(
                f"no training example for task.tasks={opts.tasks} in data.source={self.cfg.data.source}: {way_out}, "
                "or choose a source that carries them (VQA: vqa_rad, slake, pathvqa, cxr_vqa_synthetic)"
            )
        order = None
        if training:
            by_task = [[k for k, e in enumerate(examples) if e.task == t] for t in SUBTASKS]
            sizes = [len(ks) for ks in by_task]
            weights = [float(n) for n in sizes] if not opts.weights else [opts.weights.get(t, 1.0) for t in SUBTASKS]
            pairs = mixture_index(sizes, weights, self.cfg.train.seed, opts.epoch_size or None)
            order = [by_task[t][j] for t, j in pairs]
        else:  # the sub-tasks in turn, so that the first N (train.eval_max_studies, evaluate --max-studies) hold each
            by_task = [[k for k, e in enumerate(examples) if e.task == t] for t in SUBTASKS]
            order = [k for group in zip_longest(*by_task) for k in group if k is not None]
        views = ViewLoader(mc.image_size, 1, mc.in_chans, self.cfg.data.cache_images)
        return InstructionDataset(
            studies,
            examples,
            self.tokenizer,
            views,
            opts.max_source_tokens,
            opts.max_target_tokens,
            self.cfg.data.strict,
            order,
            self.coder if "mim" in opts.tasks and any(e.task == "mim" for e in examples) else None,
        )

    def collate(self, items: Sequence[Any]) -> InstructionBatch:
        mc = self.cfg.model
        return collate_instructions(items, self.tokenizer.pad_token_id, mc.image_size, mc.in_chans)

    # ------------------------------------------------------------------------------------- candidates / trie
    def candidates(self, task: str) -> list[str]:
        return self.answers if task == "vqa" else self.class_names

    def trie(self, task: str) -> Any:
        """The prefix trie over the token ids (+ EOS) of `task`'s candidate answers."""
        if task not in self._tries:
            from medvl.models.unified.trie import PrefixTrie

            self._tries[task] = PrefixTrie(answer_sequences(self.tokenizer, self.candidates(task)))
        return self._tries[task]

    def allowed_mask(self, batch: InstructionBatch, vocab: int) -> torch.Tensor | None:
        """bool [B, T, V]: the tokens the trie allows after each target prefix, the code range then EOS for mim
        examples (always), every token for unconstrained examples; None when no example of the batch is
        constrained."""
        rows = [k for k, t in enumerate(batch.tasks) if t in CONSTRAINED and self.candidates(t)]
        mim = [k for k, t in enumerate(batch.tasks) if t == "mim"]
        if not mim and (not self.options.constrain or not rows):
            return None
        mask = torch.ones(*batch.target_ids.shape, vocab, dtype=torch.bool, device=batch.target_ids.device)
        if mim:
            index = torch.tensor(mim, device=mask.device)
            lengths = batch.target_mask[index].sum(1) - 1  # codes before the EOS
            eos = self.tokenizer.eos_token_id
            part = code_mask(lengths.cpu(), mask.shape[1], vocab, self.code_offset, self.n_codes, eos)
            mask[index] = part.to(mask.device)
        if not self.options.constrain:
            return mask
        for task in {batch.tasks[k] for k in rows}:
            mine = torch.tensor([k for k in rows if batch.tasks[k] == task], device=mask.device)
            mask[mine] = self.trie(task).mask(batch.target_ids[mine], vocab, self.tokenizer.pad_token_id)
        return mask.to(batch.target_ids.device)

    # ------------------------------------------------------------------------------------------------- train
    def _prev(self, target_ids: torch.Tensor) -> torch.Tensor:
        bos = torch.full_like(target_ids[:, :1], self.tokenizer.bos_token_id)
        return torch.cat([bos, target_ids[:, :-1]], 1)

    def _logits(self, batch: InstructionBatch) -> torch.Tensor:
        prev = self._prev(batch.target_ids)
        prev_mask = torch.cat([torch.ones_like(batch.target_mask[:, :1]), batch.target_mask[:, :-1]], 1)
        return self.model(batch.images, batch.image_valid, batch.src_ids, batch.src_mask, prev, prev_mask)

    def __call__(self, batch: InstructionBatch) -> dict[str, torch.Tensor]:
        opts = self.options
        training = self.model.training and torch.is_grad_enabled()
        logits = self._logits(batch)
        allowed = self.allowed_mask(batch, logits.shape[-1])
        targets = batch.target_ids.masked_fill(~batch.target_mask, IGNORE)
        task_ids = torch.tensor([SUBTASKS.index(t) for t in batch.tasks], device=logits.device)
        drop = opts.drop_worst_ratio if training and self.updates >= opts.drop_worst_after else 0.0
        r_drop = training and opts.r_drop_alpha > 0
        if r_drop:  # a second dropout pass over the same batch; both count in the loss, as in OFA
            second = self._logits(batch)
            kl = r_drop_kl(logits, second, batch.target_mask, allowed)
            logits, targets, task_ids = torch.cat([logits, second]), torch.cat([targets, targets]), task_ids.repeat(2)
            allowed = torch.cat([allowed, allowed]) if allowed is not None else None
        terms = label_smoothed_nll(
            logits,
            targets,
            epsilon=self.label_smoothing,
            ignore_index=IGNORE,
            allowed_mask=allowed,
            drop_worst_ratio=drop,
        )
        counts = (targets != IGNORE).sum(1) * terms.kept
        loss, per_task = per_task_mean(terms.per_sample * terms.kept, counts, task_ids)
        if r_drop:
            loss = loss + opts.r_drop_alpha * kl / counts.sum().clamp_min(1)
        if training:
            self.updates += 1 / max(1, self.cfg.train.grad_accum)
        out = {"loss": loss, "weight": torch.tensor(float(len(batch))), "n_tokens": terms.n_tokens}
        out |= {f"loss_{SUBTASKS[t]}": v.detach() for t, v in per_task.items()}
        return out

    def log_likelihood(self, batch: InstructionBatch) -> torch.Tensor:
        """Summed log-probability of the batch's targets (saliency maps explain it)."""
        logits = self._logits(batch).float()
        logp = logits.log_softmax(-1).gather(-1, batch.target_ids[..., None])[..., 0]
        return (logp * batch.target_mask).sum()

    # ----------------------------------------------------------------------------------------------- decode
    def _subset(self, batch: InstructionBatch, rows: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.tensor(rows, device=batch.images.device)
        return tuple(t.index_select(0, index) for t in (batch.images, batch.image_valid, batch.src_ids, batch.src_mask))

    @torch.no_grad()
    def candidate_scores(self, batch: InstructionBatch, rows: list[int], task: str) -> torch.Tensor:
        """float [len(rows), K]: summed log-probability of each of `task`'s K candidates."""
        cands = pad_candidates(answer_sequences(self.tokenizer, self.candidates(task)), self.tokenizer.pad_token_id)
        tok = self.tokenizer
        return self.model.score_candidates(
            *self._subset(batch, rows), cands.to(batch.images.device), bos_id=tok.bos_token_id, pad_id=tok.pad_token_id
        ).float()

    @torch.no_grad()
    def generate(self, batch: InstructionBatch, rows: list[int], gen: GenerationConfig, constrain: bool) -> list[str]:
        """Texts generated for `rows` of the batch; vqa/classification rows under their trie when `constrain`."""
        tasks = [batch.tasks[k] for k in rows]
        tries = [self.trie(t) if constrain and t in CONSTRAINED and self.candidates(t) else None for t in tasks]
        allowed = (
            (lambda i, prefix: tries[i].allowed(prefix) if tries[i] is not None else None)
            if any(t is not None for t in tries)
            else None
        )
        tok = self.tokenizer
        longest = max(
            (
                max(len(s) for s in answer_sequences(tok, self.candidates(t)))
                for t, trie in zip(tasks, tries, strict=True)
                if trie is not None
            ),
            default=0,
        )
        # room for the longest candidate: a constrained answer cut before its EOS would be no candidate
        ids = self.model.generate(
            *self._subset(batch, rows),
            max_new_tokens=max(gen.max_new_tokens, longest),
            num_beams=gen.num_beams,
            length_penalty=gen.length_penalty,
            no_repeat_ngram_size=gen.no_repeat_ngram_size,
            bos_id=tok.bos_token_id,
            eos_id=tok.eos_token_id,
            pad_id=tok.pad_token_id,
            allowed_tokens=allowed,
        )
        # an image code in a text answer (an untrained model may emit one) has no text: left out
        return [decode_report(tok, [i for i in row.tolist() if i < self.code_offset]) for row in ids]

    @torch.no_grad()
    def generate_codes(self, batch: InstructionBatch, rows: list[int], gen: GenerationConfig) -> list[str]:
        """The code grids generated for the mim `rows` ("<code_k> ..."), only codes then EOS allowed (no n-gram
        ban: neighbouring cells of an image repeat codes)."""
        length = int(batch.target_mask[rows[0]].sum()) - 1
        from medvl.models.unified.generation import generate

        tok = self.tokenizer
        ids = generate(
            self.model,
            *self._subset(batch, rows),
            max_new_tokens=length + 1,
            num_beams=gen.num_beams,
            length_penalty=gen.length_penalty,
            no_repeat_ngram_size=0,
            bos_id=tok.bos_token_id,
            eos_id=tok.eos_token_id,
            pad_id=tok.pad_token_id,
            allowed_tokens=allowed_codes(length, self.code_offset, self.n_codes, tok.eos_token_id),
        )
        return [codes_text(row.tolist(), self.code_offset, self.n_codes) for row in ids]

    @torch.no_grad()
    def code_nll(self, batch: InstructionBatch, rows: list[int]) -> list[float]:
        """Mean negative log-likelihood per code (nats) of each mim row's target under teacher forcing, the
        distribution restricted to the code range (what log K is the uniform baseline of)."""
        index = torch.tensor(rows, device=batch.images.device)
        prev = self._prev(batch.target_ids[index])
        logits = self.model(*self._subset(batch, rows), prev).float()
        lo, hi = self.code_offset, self.code_offset + self.n_codes
        logp = logits[..., lo:hi].log_softmax(-1)
        target = (batch.target_ids[index] - lo).clamp(0, self.n_codes - 1)
        nll = -logp.gather(-1, target[..., None])[..., 0]
        is_code = (batch.target_ids[index] >= lo) & (batch.target_ids[index] < hi) & batch.target_mask[index]
        return ((nll * is_code).sum(1) / is_code.sum(1).clamp_min(1)).tolist()

    def _rows(self, batch: InstructionBatch, gen: GenerationConfig) -> list[dict[str, Any]]:
        opts = self.options
        texts: dict[int, str] = {}
        probs: dict[int, np.ndarray] = {}
        by_task = {t: [k for k, x in enumerate(batch.tasks) if x == t] for t in set(batch.tasks)}
        scored = {"classification"} | ({"vqa"} if opts.candidate_decoding == "score" else set())
        for task, rows in by_task.items():
            if task in scored and self.candidates(task):
                scores = self.candidate_scores(batch, rows, task)
                best = scores.argmax(1).tolist()
                texts |= {k: self.candidates(task)[b] for k, b in zip(rows, best, strict=True)}
                if task == "classification":
                    probs |= dict(zip(rows, scores.softmax(-1).cpu().numpy(), strict=True))
        nll: dict[int, float] = {}
        mim = by_task.get("mim", [])
        for length in sorted({int(batch.target_mask[k].sum()) for k in mim}):  # one code-grid size per call
            rows = [k for k in mim if int(batch.target_mask[k].sum()) == length]
            texts |= dict(zip(rows, self.generate_codes(batch, rows, gen), strict=True))
            nll |= dict(zip(rows, self.code_nll(batch, rows), strict=True))
        generated = [k for k in range(len(batch)) if k not in texts]
        if generated:
            texts |= dict(zip(generated, self.generate(batch, generated, gen, opts.constrain), strict=True))
        rows_out = []
        for k, sid in enumerate(batch.ids):
            meta = batch.meta[k]
            row: dict[str, Any] = {
                "id": sid,
                "task": batch.tasks[k],
                "reference": batch.targets[k],
                "generated": texts[k],
            }
            if batch.tasks[k] == "vqa":
                row |= {
                    "question": meta.get("question", ""),
                    "answer_type": meta.get("answer_type", ""),
                    "question_type": meta.get("question_type", ""),
                }
            if batch.tasks[k] == "classification":
                row |= {"probs": probs.get(k), "labels": meta.get("labels", {})}
            if batch.tasks[k] == "mim":
                row["nll"] = nll[k]
            rows_out.append(row)
        return rows_out

    def outputs(self, batch: InstructionBatch) -> list[dict[str, Any]]:
        return self._rows(batch, self.generation)

    def validation_outputs(self, batch: InstructionBatch) -> list[dict[str, Any]]:
        """Greedy decoding during training (fast); `medvl evaluate` uses the configured decoding."""
        import dataclasses

        return self._rows(batch, dataclasses.replace(self.generation, num_beams=1))

    def validation_metrics(self, rows: Sequence[Any]) -> dict[str, float]:
        return instructed_eval.validation_metrics(rows, self.n_codes)

    # ------------------------------------------------------------------------------------------------ evaluate
    def evaluation(
        self, outputs: dict[str, list[Any]], studies: dict[str, list[Study]], options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = list(outputs.values())[-1]
        return instructed_eval.evaluation(
            rows,
            studies,
            options,
            self.class_names,
            self.multi_label,
            self.options.none_class,
            self.answers,
            self.n_codes,
        )

    def write_evaluation(
        self, out: Path, result: dict[str, Any], rows: list[dict[str, Any]], options: Any, title: str
    ) -> None:
        from medvl.jsonl import write_evaluation_files

        write_evaluation_files(out, result, rows)

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> str:
        return instructed_eval.format_evaluation(result)

    # ---------------------------------------------------------------------------------------------- inference
    def inference_batch(self, studies: Sequence[Any]) -> InstructionBatch:
        opts, tok = self.options, self.tokenizer
        items = []
        for s in studies:
            question = (getattr(s, "question", "") or "").strip()
            task = opts.request_task(question)
            instruction = " " + question if question else opts.prompts().get(task, opts.caption_prompt)
            src = text_ids(tok, instruction)[: opts.max_source_tokens]
            image = s.pixels[0] if len(s.pixels) else None
            items.append(InstructionSample(s.id, task, image, src, [tok.eos_token_id], "", {"question": question}))
        return self.collate(items)

    def request_task(self, question: str, field: str = "--question") -> str:
        """The sub-task a request runs (see `InstructedGenerationOptions.request_task`; ValueError if untrained)."""
        return self.options.request_task(question, field)

    @property
    def subtasks(self) -> list[str]:
        """The sub-tasks the checkpoint was trained for (`task.tasks`)."""
        return list(self.options.tasks)

    @property
    def takes_question(self) -> bool:
        """Whether a request may ask a question about its images (the vqa sub-task was trained)."""
        return "vqa" in self.options.tasks

    @property
    def requires_question(self) -> bool:
        """Whether every request must ask a question (no trained sub-task runs without one, e.g. a VQA-only run)."""
        return self.options.default_task() not in self.options.tasks

    def predict(self, batch: InstructionBatch) -> list[dict[str, Any]]:
        return [{"task": r["task"], "text": r["generated"]} for r in self.outputs(batch)]

    def explain_score(self, batch: InstructionBatch, record: dict[str, Any]) -> torch.Tensor:
        tok = self.tokenizer
        ids = text_ids(tok, record["text"])[: self.options.max_target_tokens - 1] + [tok.eos_token_id]
        batch.target_ids = torch.tensor([ids], device=batch.images.device)
        batch.target_mask = torch.ones_like(batch.target_ids, dtype=torch.bool)
        return self.log_likelihood(batch)


__all__ = ["InstructedGenerationOptions", "InstructedGenerationTask"]
