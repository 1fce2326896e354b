"""Typed configuration of report generation (used by validation, `medvl evaluate`, `medvl predict`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationConfig:
    """How text-generating tasks decode (the recipe's `generation:` section, `medvl evaluate/predict` flags).

    Greedy or beam search by default; `do_sample` draws tokens instead (temperature, top-k, nucleus top-p; seeded).
    Invalid values raise `ValueError` naming the field.
    """

    num_beams: int = 3
    """Beam width (1 = greedy)."""
    max_new_tokens: int = 128
    """Longest report generated, in tokens."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size within a report (0 = off)."""
    length_penalty: float = 1.0
    """Beam score = log-prob / length**length_penalty."""
    batch_size: int = 32
    """Studies generated at once."""
    do_sample: bool = False
    """Sample each token instead of taking the most likely (needs num_beams=1)."""
    temperature: float = 1.0
    """Sampling: logits are divided by this (below 1: closer to greedy)."""
    top_p: float = 1.0
    """Sampling: keep the smallest set of tokens whose probability reaches top_p (1 = all)."""
    top_k: int = 0
    """Sampling: keep the top_k most likely tokens (0 = all)."""
    seed: int = 0
    """Sampling: seed of the random generator (the same batch and seed give the same reports)."""

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"generation.num_beams must be >= 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"generation.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        if self.batch_size < 1:
            raise ValueError(f"generation.batch_size must be >= 1, got {self.batch_size}")
        if self.temperature <= 0:
            raise ValueError(f"generation.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"generation.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"generation.top_k must be >= 0, got {self.top_k}")
        if self.do_sample and self.num_beams != 1:
            raise ValueError(
                f"generation.do_sample needs generation.num_beams=1 (got {self.num_beams}): sampling "
                "draws one report per study"
            )
