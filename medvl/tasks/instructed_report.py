"""Instruction-following report generation (XrayGPT): prompt + image embeddings -> LLM, loss on the answer only.

Contract (the runner's task interface, plus chat):
- `task(batch)` -> {"loss", "n_tokens"}: for every study an instruction drawn from the template's prompt pool
  (Python's `random`, whose state checkpoints carry, so resumed runs draw the same ones) becomes
  `BOS + prompt-before-image + Q image slots + prompt-after-image + report + EOS`; the cross-entropy is taken over the
  report tokens and EOS only (prompt and image positions are labelled -100).
- `generate(batch, gen)` -> report texts, prompted with the pool's first instruction (deterministic), greedy or beam
  search through HF `generate`, cut at the template's stop marker.
- `chat(batch, history, question, gen)` -> the answer to a follow-up question about one study, given earlier
  (question, answer) turns (`supports_chat` is True).

Data, validation, evaluation and prediction records are those of every report task (`ReportTask`).
The batch is the standard report batch (`medvl.data.dataset.Batch`): its `input_ids` (BOS + report + EOS, right
padded) are the answers; prompts are tokenized here with the same tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvl.data.dataset import Batch
from medvl.data.tokenizer import decode_report
from medvl.infer.config import GenerationConfig
from medvl.tasks.report_generation import ReportTask

IGNORE = -100


class InstructedReportTask(ReportTask):
    name = "instructed_report"
    supports_chat = True

    def __init__(self, model: nn.Module, tokenizer: Any, cfg: Any = None) -> None:
        super().__init__(model, tokenizer, cfg)
        raw = getattr(model, "module", model)  # under DDP the config lives on the wrapped model
        self.config = raw.config
        self.template = raw.config.template
        self.n_image = raw.n_image_tokens

    # -------------------------------------------------------------------------------------------- sequences
    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def _prompt_ids(self, before: str, after: str) -> tuple[list[int], list[int]]:
        before_ids, after_ids = self._text_ids(before), self._text_ids(after)
        budget = self.config.max_prompt_tokens
        if len(before_ids) + len(after_ids) > budget:  # keep the end (the question and the answer marker)
            keep_after = min(len(after_ids), budget)
            after_ids = after_ids[-keep_after:]
            before_ids = before_ids[-(budget - keep_after) :] if budget > keep_after else []
        return before_ids, after_ids

    def _sequences(
        self, prompts: Sequence[tuple[str, str]], answers: Sequence[list[int]] | None, left_pad: bool
    ) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, image_mask, labels [B, T] for prompts (+ answers)."""
        tok = self.tokenizer
        rows = []
        for i, (before, after) in enumerate(prompts):
            before_ids, after_ids = self._prompt_ids(before, after)
            prompt = [tok.bos_token_id, *before_ids, -1, *after_ids]  # -1 stands for the image slots
            answer = list(answers[i]) if answers is not None else []
            ids, labels, image = [], [], []
            for token in prompt:
                if token == -1:
                    ids += [tok.pad_token_id] * self.n_image
                    image += [True] * self.n_image
                    labels += [IGNORE] * self.n_image
                else:
                    ids.append(token)
                    image.append(False)
                    labels.append(IGNORE)
            ids += answer
            image += [False] * len(answer)
            labels += answer
            rows.append((ids, labels, image))
        length = max(len(r[0]) for r in rows)
        out = {
            k: torch.full((len(rows), length), v, dtype=torch.long)
            for k, v in (("input_ids", tok.pad_token_id), ("attention_mask", 0), ("labels", IGNORE))
        }
        out["image_mask"] = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (ids, labels, image) in enumerate(rows):
            cols = slice(length - len(ids), length) if left_pad else slice(0, len(ids))
            out["input_ids"][i, cols] = torch.tensor(ids)
            out["labels"][i, cols] = torch.tensor(labels)
            out["attention_mask"][i, cols] = 1
            out["image_mask"][i, cols] = torch.tensor(image)
        return out

    def _answers(self, batch: Batch) -> list[list[int]]:
        """Each study's report tokens + EOS (the dataset's BOS dropped, padding removed)."""
        lengths = batch.attention_mask.sum(1).tolist()
        return [row[1:n].tolist() for row, n in zip(batch.input_ids.cpu(), lengths, strict=True)]

    # ------------------------------------------------------------------------------------------------ train
    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        prompts = [self.template.single_turn(self.template.sample_instruction()) for _ in range(len(batch))]
        seq = {k: v.to(batch.images.device) for k, v in self._sequences(prompts, self._answers(batch), False).items()}
        logits = self.model(
            batch.images, batch.view_ids, batch.view_mask, seq["input_ids"], seq["attention_mask"], seq["image_mask"]
        )
        targets = seq["labels"][:, 1:]
        loss = F.cross_entropy(
            logits[:, :-1].float().flatten(0, 1),
            targets.flatten(),
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
        )
        n_tokens = (targets != IGNORE).sum()
        return {"loss": loss, "weight": n_tokens, "n_tokens": n_tokens}

    def log_likelihood(self, batch: Batch) -> torch.Tensor:
        """Summed log-probability of the batch's reports after the pool's first instruction (for saliency maps)."""
        prompts = [self.template.single_turn(self.template.prompts[0])] * len(batch)
        seq = {k: v.to(batch.images.device) for k, v in self._sequences(prompts, self._answers(batch), False).items()}
        logits = self.model(
            batch.images, batch.view_ids, batch.view_mask, seq["input_ids"], seq["attention_mask"], seq["image_mask"]
        )
        targets = seq["labels"][:, 1:]
        keep = targets != IGNORE
        logp = logits[:, :-1].float().log_softmax(-1).gather(-1, targets.clamp_min(0)[..., None])[..., 0]
        return (logp * keep).sum()

    # --------------------------------------------------------------------------------------------- generate
    def _generate(self, batch: Batch, prompts: Sequence[tuple[str, str]], gen: GenerationConfig) -> list[str]:
        seq = {k: v.to(batch.images.device) for k, v in self._sequences(prompts, None, True).items()}
        tok = self.tokenizer
        ids = self.model.generate_from(
            batch.images,
            batch.view_ids,
            batch.view_mask,
            seq["input_ids"],
            seq["attention_mask"],
            seq["image_mask"],
            max_new_tokens=min(gen.max_new_tokens, self.config.max_len),
            num_beams=gen.num_beams,
            no_repeat_ngram_size=gen.no_repeat_ngram_size,
            length_penalty=gen.length_penalty,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
        )
        return [self.template.clean_answer(decode_report(tok, row.tolist())) for row in ids]

    @torch.inference_mode()
    def generate(self, batch: Batch, gen: GenerationConfig) -> list[str]:
        prompt = self.template.single_turn(self.template.prompts[0])
        return self._generate(batch, [prompt] * len(batch), gen)

    @torch.inference_mode()
    def chat(self, batch: Batch, history: Sequence[tuple[str, str]], question: str, gen: GenerationConfig) -> str:
        """Answer `question` about the one study in `batch`, after the earlier (question, answer) turns."""
        if len(batch) != 1:
            raise ValueError(f"chat takes one study at a time, got {len(batch)}")
        return self._generate(batch, [self.template.chat(history, question)], gen)[0]


__all__ = ["IGNORE", "InstructedReportTask"]
