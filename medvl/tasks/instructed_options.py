"""The `task:` section of a unified-family recipe (`instructed_generation`): which sub-tasks are trained and how they
are mixed, their prompts, answer constraints, loss options, and which sub-task a request without a question runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from medvl.tasks.instructions import SUBTASKS
from medvl.tasks.mim import MIMOptions


@dataclass
class InstructedGenerationOptions:
    """The `task:` section of a unified-family recipe."""

    tasks: list[str] = field(default_factory=lambda: [t for t in SUBTASKS if t != "mim"])
    """Sub-tasks trained and evaluated, among caption, vqa, classification, summarization, mim (a study serves those
    whose record it carries; mim, every study with an image, needs `mim.tokenizer`)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Sampling weight per sub-task in a training epoch; empty = each sub-task in proportion to its examples; a
    sub-task not named gets 1.0."""
    epoch_size: int = 0
    """Examples per training epoch (0 = as many as the training examples)."""
    caption_prompt: str = " what does the image describe?"
    """BiomedGPT's captioning instruction."""
    classification_prompt: str = " what does the image describe?"
    """BiomedGPT's image-classification instruction (the target is the class name)."""
    summarization_prompt: str = ' what is the summary of article " {text} "?'
    """OFA's summarization instruction; {text} is the text to summarize."""
    class_names: list[str] = field(default_factory=list)
    """Labels named by the classification sub-task; empty = every label some training study is positive for."""
    none_class: str = ""
    """Class name for a study with no positive label (e.g. "no finding"); empty = such studies have no
    classification example."""
    constrain: bool = True
    """Constrain vqa and classification answers to their candidate set (train + val answers, class names) in training
    (masked logits) and beam-search decoding (prefix trie)."""
    candidate_decoding: str = "beam"
    """How vqa answers are decoded in evaluation: beam (beam search, under the trie when constrained) or score
    (score every candidate, take the best; always inside the candidate set)."""
    r_drop_alpha: float = 0.0
    """R-Drop weight of the symmetric KL between two dropout passes (0 = off; OFA's flag is --reg-alpha with
    --use-rdrop, off by default)."""
    drop_worst_ratio: float = 0.0
    """Fraction of examples with the highest loss left out of each batch's loss (0 = off, OFA's default)."""
    drop_worst_after: int = 0
    """Updates before drop-worst starts (OFA's --drop-worst-after)."""
    max_source_tokens: int = 96
    """Instruction tokens kept (longer instructions are cut)."""
    max_target_tokens: int = 128
    """Target tokens kept, EOS included."""
    mim: MIMOptions = field(default_factory=MIMOptions)
    """Masked image modelling: the VQ tokenizer whose codes of the central region are the target, and the prompt."""
    predict_task: str = ""
    """Sub-task `medvl predict` / `serve` run when the request has no question; empty = caption if trained, else
    classification if trained, else none (every request must then ask a question)."""

    def __post_init__(self) -> None:
        named = [*self.tasks, *self.weights, *([self.predict_task] if self.predict_task else [])]
        unknown = [t for t in named if t not in SUBTASKS]
        if unknown or not self.tasks:
            raise ValueError(
                f"task.tasks, task.weights and task.predict_task take sub-tasks among "
                f"{', '.join(SUBTASKS)}; got {unknown or 'no task'}"
            )
        negative = {t: w for t, w in self.weights.items() if not w >= 0}
        if negative or (self.weights and not any(self.weights.get(t, 1.0) > 0 for t in self.tasks)):
            raise ValueError(
                f"task.weights must be >= 0 with some trained sub-task above 0 (a sub-task not named gets 1.0); got "
                f"{self.weights}"
            )
        if self.candidate_decoding not in ("beam", "score"):
            raise ValueError(f"task.candidate_decoding must be beam or score, got {self.candidate_decoding!r}")
        if self.r_drop_alpha < 0 or not 0 <= self.drop_worst_ratio < 1 or self.drop_worst_after < 0:
            raise ValueError(
                "task.r_drop_alpha must be >= 0, task.drop_worst_ratio in [0, 1) and task.drop_worst_after >= 0"
            )
        if "mim" in self.tasks and not self.mim.tokenizer:
            raise ValueError(
                "task.tasks names mim but task.mim.tokenizer is empty: give the VQ image tokenizer (a run of "
                "`medvl train vq_tokenizer_tiny_synthetic`, or a taming-transformers checkpoint file)"
            )
        if "mim" == self.predict_task:
            raise ValueError("task.predict_task cannot be mim (it is a pretraining sub-task)")
        if "{text}" not in self.summarization_prompt:
            raise ValueError("task.summarization_prompt must contain {text}, where the text to summarize goes")

    def default_task(self) -> str:
        """The sub-task a request without a question runs: `predict_task`, else caption if trained, else
        classification if trained; '' when there is none (every request must then ask a question)."""
        return self.predict_task or next((t for t in ("caption", "classification") if t in self.tasks), "")

    def request_task(self, question: str, field: str = "--question") -> str:
        """The sub-task a prediction request runs: vqa when it asks a question, else `default_task()`. Raises
        ValueError when the checkpoint was not trained for that sub-task, since its output would be noise; the
        message says what to send instead, naming where the question goes (`field`: the command-line flag, the
        API's form field, the demo's box)."""
        trained = ", ".join(self.tasks)
        if question.strip():
            if "vqa" not in self.tasks:
                raise ValueError(
                    f"this checkpoint does not answer questions: it was trained for task.tasks=[{trained}], not vqa; "
                    f"leave out the question ({field})"
                )
            return "vqa"
        task = self.default_task()
        if task not in self.tasks:
            ask = f'medvl predict RUN IMAGE {field} "..."' if field.startswith("--") else field
            way_out = (
                f"ask a question about the image ({ask})"
                if "vqa" in self.tasks
                else f"task.predict_task must name one of them (in the run's config.json), not {task!r}"
            )
            raise ValueError(
                f"this checkpoint was trained for task.tasks=[{trained}] only"
                + (f", not {task}" if task else "")
                + f": {way_out}"
            )
        return task

    def prompts(self) -> dict[str, str]:
        return {
            "caption": self.caption_prompt,
            "classification": self.classification_prompt,
            "summarization": self.summarization_prompt,
            "mim": self.mim.prompt,
        }
