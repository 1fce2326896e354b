"""Visual question answering accuracy: closed, open and overall exact match after normalization, with bootstrap CIs,
per question type, and the majority-answer baselines.

Normalization (`normalize_answer`) follows the VQA v2 evaluation script (Antol et al. 2015; `vqaEval.py`'s
`processPunctuation` and `processDigitArticle`), the usual choice in medical VQA (VQA-RAD, SLAKE, PathVQA papers and
BiomedGPT score exact match on such normalized strings): lower-case; punctuation removed (a period or comma inside a
number is kept, "1,000" becomes "1000"); number words zero..twenty to digits; the articles a, an, the dropped;
whitespace collapsed. Beyond VQA v2, whole answers that are yes/no variants (yeah, yep, true / nope, false) map to
yes / no, since closed medical questions are yes/no. A prediction is correct when its normalized text equals the
normalized reference (medical VQA data sets give one reference answer, so VQA v2's min(#agreeing/3, 1) over ten
human answers reduces to exact match).

`vqa_accuracy` returns, for `n` questions, flat keys:

    accuracy, closed_accuracy, open_accuracy      fractions in [0, 1] (None for a group without questions)
    <key>_ci_low, <key>_ci_high                   percentile bootstrap 95% interval (resampling questions)
    n, n_closed, n_open
    per_question_type                             {type: {"n", "accuracy", "closed_accuracy", "open_accuracy"}}

`MajorityBaseline` predicts, for each question, the most common training answer of its (answer type, question type),
falling back to that of its answer type and then to the overall majority for a pair unseen in training: the answer
type (closed/open) is part of every question file, so a baseline may use it. `majority_baselines` scores it and the
single overall-majority answer the same way, and, given the question texts, the majority answer per question (what
a model blind to the image can reach when many images share a question). `format_vqa` renders the terminal table.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medvl.evaluate.classification_core import CI_LEVEL, _interval, _resample_weights

ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
YES_NO = {"yes": "yes", "yeah": "yes", "yep": "yes", "true": "yes", "no": "no", "nope": "no", "false": "no"}
ANSWER_TYPES = ("closed", "open")
_NUMBER_SEPARATOR = re.compile(r"(?<=\d)[.,](?=\d)")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize_answer(text: Any) -> str:
    """The normalized form of an answer (see the module docstring); numbers and None are read as text."""
    text = "" if text is None else str(text).lower().strip()
    text = _NUMBER_SEPARATOR.sub(lambda m: "." if m.group() == "." else "", text)  # 1,000 -> 1000; 2.5 kept
    kept = re.split(r"(\d+\.\d+)", text)  # decimals survive the punctuation pass
    text = "".join(
        part if i % 2 else _PUNCTUATION.sub(lambda m: "" if m.group() == "'" else " ", part)
        for i, part in enumerate(kept)
    )
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]
    text = " ".join(words)
    return YES_NO.get(text, text)


def _check(name: str, values: Sequence[Any], n: int) -> None:
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} questions")


def _answer_types(answer_types: Sequence[str]) -> np.ndarray:
    types = np.array([str(t).strip().lower() for t in answer_types], dtype=object)
    bad = sorted({t for t in types if t not in ANSWER_TYPES})
    if bad:
        raise ValueError(f"answer types must be closed or open, got {bad[0]!r}")
    return types


def vqa_accuracy(
    predictions: Sequence[Any],
    answers: Sequence[Any],
    answer_types: Sequence[str],
    question_types: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Exact-match accuracy after `normalize_answer`, closed / open / overall (see the module docstring for keys).

    Args:
        predictions: [n] predicted answers.
        answers: [n] reference answers.
        answer_types: [n] "closed" or "open" (any case).
        question_types: [n] the data set's question types (VQA-RAD PRES/POS..., SLAKE Organ/Position...), for the
            per-type breakdown; None for none.
        bootstrap: resamples of the questions for the 95% intervals; 0 for none (no `_ci_` keys).
        seed: seed of the resampling.

    Raises:
        ValueError: lists of different lengths, no question, an answer type other than closed/open, a negative
            `bootstrap`.
    """
    n = len(answers)
    if n == 0:
        raise ValueError("no question to score")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    _check("predictions", predictions, n)
    _check("answer_types", answer_types, n)
    types = _answer_types(answer_types)
    correct = np.array(
        [normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers, strict=True)],
        dtype=np.float64,
    )
    groups = {
        "accuracy": np.ones(n, dtype=bool),
        "closed_accuracy": types == "closed",
        "open_accuracy": types == "open",
    }
    result: dict[str, Any] = {
        "n": n,
        "n_closed": int(groups["closed_accuracy"].sum()),
        "n_open": int(groups["open_accuracy"].sum()),
    }
    weights = _resample_weights(n, bootstrap, seed) if bootstrap else None
    for key, mask in groups.items():
        result[key] = float(correct[mask].mean()) if mask.any() else None
        if weights is not None:
            w = weights[:, mask]
            with np.errstate(invalid="ignore", divide="ignore"):
                resampled = (w @ correct[mask]) / w.sum(axis=1)
            low, high, _ = _interval(resampled) if mask.any() else (None, None, bootstrap)
            result[f"{key}_ci_low"], result[f"{key}_ci_high"] = low, high
    if question_types is not None:
        _check("question_types", question_types, n)
        qtypes = np.array([str(q) for q in question_types], dtype=object)
        result["per_question_type"] = {}
        for qt in sorted(set(qtypes)):
            row: dict[str, Any] = {"n": int((qtypes == qt).sum())}
            for key, mask in groups.items():
                sel = mask & (qtypes == qt)
                row[key] = float(correct[sel].mean()) if sel.any() else None
            result["per_question_type"][qt] = row
    if bootstrap:
        result["bootstrap"] = {"resamples": bootstrap, "seed": seed, "method": "percentile", "level": CI_LEVEL}
    return result


def _majority(answers: Sequence[str]) -> str:
    """The most common normalized answer; ties go to the alphabetically first, so the order of the data is moot."""
    counts = Counter(normalize_answer(a) for a in answers)
    return min(counts, key=lambda a: (-counts[a], a))


class MajorityBaseline:
    """The most common training answer per (answer type, question type) (see the module docstring)."""

    def __init__(self, by_pair: Mapping[tuple[str, str], str], by_type: Mapping[str, str], overall: str) -> None:
        self.by_pair, self.by_type, self.overall = dict(by_pair), dict(by_type), overall

    @classmethod
    def fit(
        cls, answers: Sequence[Any], answer_types: Sequence[str], question_types: Sequence[str]
    ) -> MajorityBaseline:
        """Fit on the training questions.

        Raises:
            ValueError: no training question, lists of different lengths.
        """
        n = len(answers)
        if n == 0:
            raise ValueError("the majority baseline needs training questions; the train split has none")
        _check("answer_types", answer_types, n)
        _check("question_types", question_types, n)
        types = _answer_types(answer_types)
        pairs: dict[tuple[str, str], list[str]] = {}
        by_type: dict[str, list[str]] = {}
        for a, t, q in zip(answers, types, question_types, strict=True):
            pairs.setdefault((t, str(q)), []).append(str(a))
            by_type.setdefault(t, []).append(str(a))
        return cls(
            {k: _majority(v) for k, v in pairs.items()},
            {k: _majority(v) for k, v in by_type.items()},
            _majority([str(a) for a in answers]),
        )

    def predict(self, answer_types: Sequence[str], question_types: Sequence[str]) -> list[str]:
        """The baseline's answer to each question."""
        types = _answer_types(answer_types)
        return [
            self.by_pair.get((t, str(q)), self.by_type.get(t, self.overall))
            for t, q in zip(types, question_types, strict=True)
        ]


def majority_baselines(
    train: Mapping[str, Sequence[Any]], test: Mapping[str, Sequence[Any]], bootstrap: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """`vqa_accuracy` of the majority baselines fitted on `train` and scored on `test`.

    Args:
        train, test: {"answers": [...], "answer_types": [...], "question_types": [...]}, optionally with
            "questions": [...] (the question texts) in both.

    Returns:
        {"majority_per_question_type": metrics, "majority_overall": metrics (plus "answer": the one answer)}, and
        with the question texts "majority_per_question": the most common training answer to the same normalized
        question (else per question type): the best a model that never looks at the image can do on questions
        asked about many images, such as a synthetic set's "is there a pleural effusion?".
    """
    fitted = MajorityBaseline.fit(train["answers"], train["answer_types"], train["question_types"])
    per_type = fitted.predict(test["answer_types"], test["question_types"])
    overall = [fitted.overall] * len(test["answers"])
    out = {
        "majority_per_question_type": vqa_accuracy(
            per_type, test["answers"], test["answer_types"], bootstrap=bootstrap, seed=seed
        ),
        "majority_overall": {
            **vqa_accuracy(overall, test["answers"], test["answer_types"], bootstrap=bootstrap, seed=seed),
            "answer": fitted.overall,
        },
    }
    if "questions" in train and "questions" in test:
        _check("questions", test["questions"], len(test["answers"]))
        per_question = MajorityBaseline.fit(
            train["answers"], train["answer_types"], [normalize_answer(q) for q in train["questions"]]
        )
        answers = [  # a question unseen in training falls back to the majority of its question type
            per_question.by_pair.get((t, normalize_answer(q)), p)
            for t, q, p in zip(_answer_types(test["answer_types"]), test["questions"], per_type, strict=True)
        ]
        out["majority_per_question"] = vqa_accuracy(
            answers, test["answers"], test["answer_types"], bootstrap=bootstrap, seed=seed
        )
    return out


def _cell(result: Mapping[str, Any], key: str) -> str:
    value = result.get(key)
    if value is None:
        return "-"
    low, high = result.get(f"{key}_ci_low"), result.get(f"{key}_ci_high")
    ci = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
    return f"{100 * value:.1f}{ci}"


def format_vqa(result: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The terminal table of `vqa_accuracy` (accuracy in %, 95% CI in brackets), the baselines as further columns,
    then the per-question-type rows when present."""
    columns = [("model", result), *((name, b) for name, b in (baselines or {}).items())]
    rows = [
        ("overall", "accuracy", "n"),
        ("closed", "closed_accuracy", "n_closed"),
        ("open", "open_accuracy", "n_open"),
    ]
    cells = [["", "n", *(name for name, _ in columns)]]
    cells += [[label, str(result.get(count, "")), *(_cell(r, key) for _, r in columns)] for label, key, count in rows]
    per_type = result.get("per_question_type") or {}
    if per_type:
        cells.append(["question type", "", *("" for _ in columns)])
        cells += [
            [f"  {qt}", str(row["n"]), _cell(row, "accuracy"), *("" for _ in columns[1:])]
            for qt, row in per_type.items()
        ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    return "\n".join(["VQA exact-match accuracy, % [95% CI]", *lines])
