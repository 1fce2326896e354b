"""Conversation templates: how an instruction, an image and a chat history become the text an LLM is prompted with.

Contract: a `ConversationTemplate` is plain data (it lives in the model config, so a recipe can swap it and every
checkpoint carries the one it was trained with). `single_turn(instruction)` is the training / report prompt and
`chat(history, question)` the multi-turn one; both return the text before and after the image placeholder, which
the model replaces with its image embeddings. XrayGPT's own template is the default:

    ###Patient: <Img><ImageHere></Img> Describe the findings. ###Doctor:

and, for chat, its system line first and earlier turns as `###Patient: ... ###Doctor: answer` pairs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

XRAYGPT_SYSTEM = (
    "You are an experienced Doctor, give the following medical scan: <Img>ImageContent</Img>. You will "
    "be able to see the medical scan once I provide it to you. Please answer my questions."
)
XRAYGPT_PROMPTS = (
    "Describe the given chest x-ray image in detail.",
    "Take a look at this chest x-ray and describe the findings and impression.",
    "Could you provide a detailed description of the given x-ray image?",
    "Describe the given chest x-ray image as detailed as possible.",
    "What are the key findings in this chest x-ray image?",
    "Could you highlight any abnormalities or concerns in this chest x-ray image?",
    "What specific features of the lungs and heart are visible in this chest x-ray image?",
    "What is the most likely diagnosis or impression based on the findings in this chest x-ray image?",
    "Can you provide a summary of the findings in this chest x-ray?",
    "Write the radiology report of this chest x-ray.",
)


@dataclass
class ConversationTemplate:
    """Prompt text pieces (see the module docstring)."""

    system: str = XRAYGPT_SYSTEM
    """System line, put before the first turn of a chat (and of training prompts when system_in_training)."""
    user: str = "###Patient"
    assistant: str = "###Doctor"
    image: str = "<Img><ImageHere></Img>"
    """Where the image goes in the first user message; must contain the placeholder once."""
    placeholder: str = "<ImageHere>"
    stop: str = "###"
    """Generated text is cut at its first occurrence (the next turn's marker)."""
    system_in_training: bool = False
    prompts: list[str] = field(default_factory=lambda: list(XRAYGPT_PROMPTS))
    """Instructions sampled per training example (XrayGPT's pool); the first one is used for report generation."""
    prompt_file: str = ""
    """Optional text file with one instruction per line, used instead of `prompts`."""

    def __post_init__(self) -> None:
        if self.image.count(self.placeholder) != 1:
            raise ValueError(
                f"model.template.image {self.image!r} must contain the placeholder {self.placeholder!r} exactly once"
            )
        if self.prompt_file:
            path = Path(self.prompt_file)
            if not path.is_file():
                raise ValueError(f"model.template.prompt_file {str(path)!r} does not exist")
            self.prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            self.prompt_file = ""  # read once; the prompts travel with the config
        if not self.prompts:
            raise ValueError("model.template.prompts is empty: give at least one instruction")

    def _split(self, text: str) -> tuple[str, str]:
        before, after = text.split(self.placeholder)
        return before, after

    def single_turn(self, instruction: str) -> tuple[str, str]:
        """(text before the image, text after it) of a one-instruction prompt, ending where the answer starts."""
        text = f"{self.user}: {self.image} {instruction} {self.assistant}:"
        if self.system_in_training:
            text = f"{self.system} {text}"
        return self._split(text)

    def chat(self, history: Sequence[tuple[str, str]], question: str) -> tuple[str, str]:
        """(before, after) of a multi-turn prompt: system, earlier (question, answer) turns, the new question."""
        turns = [*history, (question, None)]
        parts = [self.system]
        for i, (q, a) in enumerate(turns):
            q = f"{self.image} {q}" if i == 0 else q
            parts.append(f"{self.user}: {q} {self.assistant}:" + (f" {a}" if a is not None else ""))
        return self._split(" ".join(parts))

    def sample_instruction(self, rng: random.Random | None = None) -> str:
        return (rng or random).choice(self.prompts)

    def clean_answer(self, text: str) -> str:
        """The answer up to the stop marker."""
        return text.split(self.stop)[0].strip() if self.stop else text.strip()


__all__ = ["XRAYGPT_PROMPTS", "XRAYGPT_SYSTEM", "ConversationTemplate"]
