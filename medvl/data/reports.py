"""Report text rules: section extraction from raw reports, de-identification placeholders, R2Gen cleaning, length.

Contract: `select_section(text, choice)` picks the configured part of a whole report and returns `(text, problem)`,
where `problem` says why nothing usable was found (the caller keeps the study and counts it, never drops it silently);
`apply_rules(text, cfg)` applies, in this order, the placeholder rule (`cfg.deid`), the cleaning (`cfg.clean`) and
the length limit (`cfg.max_words`). A prepared data set records `rules_metadata(cfg)`, so training and evaluation
see the same text.

Sections are headers in capitals followed by a colon ("FINDINGS:", "IMPRESSION:"), at the start of a line (MIMIC-CXR
free-text reports) or inline for the two headers that matter ("... FINDINGS: ... IMPRESSION: ...").
"""

from __future__ import annotations

import re
from dataclasses import asdict

from medvl.data.config import SECTION_CHOICES, ReportConfig

PLACEHOLDER = "XXXX"

_HEADER = re.compile(r"(?m)^[ \t]*([A-Z][A-Z0-9 ,/&()'-]{1,60}?)[ \t]*:|\b(FINDINGS?|IMPRESSIONS?|CONCLUSIONS?)[ \t]*:")
_FINDINGS = {"FINDINGS", "FINDING", "FINDINGS AND IMPRESSION", "FINDINGS/IMPRESSION"}
_IMPRESSION = {
    "IMPRESSION",
    "IMPRESSIONS",
    "CONCLUSION",
    "CONCLUSIONS",
    "FINDINGS AND IMPRESSION",
    "FINDINGS/IMPRESSION",
}
# IU X-ray anonymizes with "XXXX", MIMIC-CXR with "___" (of any length).
_DEID = re.compile(r"\bX{2,}\b|_{2,}")
# R2Gen's own character class, kept verbatim: ":-\[" is a range (":" to "["), which also covers ;<=>?@ and A-Z.
_R2GEN_PUNCT = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _squash(text: str) -> str:
    return " ".join(text.split())


def extract_sections(text: str) -> dict[str, str]:
    """Sections of a raw report by upper-case header name; text before the first header is under "".

    Args:
        text: a whole report, e.g. a MIMIC-CXR `sXXXXXXXX.txt` file.

    Returns:
        header -> whitespace-normalized section text, in report order (a repeated header keeps the longer text).
    """
    out: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    starts = [(m.start(), m.end(), _squash(m.group(1) or m.group(2)).upper()) for m in matches]
    out[""] = _squash(text[: starts[0][0]] if starts else text)
    for k, (_, end, name) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        body = _squash(text[end:stop])
        if len(body) >= len(out.get(name, "")):
            out[name] = body
    return out


def _first(sections: dict[str, str], names: set[str]) -> str:
    return next((body for name, body in sections.items() if name in names and body), "")


def select_section(
    text: str, choice: str, findings: str | None = None, impression: str | None = None
) -> tuple[str, str]:
    """The configured part of a report.

    Args:
        text: the whole report ("" when the layout stores sections separately).
        choice: one of `SECTION_CHOICES` (`data.reports.section`).
        findings, impression: the sections when the layout stores them separately (OpenI XML, the IU CSV);
            otherwise they are extracted from `text`.

    Returns:
        (report text, problem): problem is "" when the text is usable, else a message saying what is missing.

    Raises:
        ValueError: an unknown choice.
    """
    if choice not in SECTION_CHOICES:
        raise ValueError(f"data.reports.section must be one of {', '.join(SECTION_CHOICES)}, got {choice!r}")
    if findings is None or impression is None:
        sections = extract_sections(text)
        findings = _first(sections, _FINDINGS) if findings is None else findings
        impression = _first(sections, _IMPRESSION) if impression is None else impression
    findings, impression = _squash(findings or ""), _squash(impression or "")
    if choice == "full":
        picked = _squash(text) or _squash(f"{findings} {impression}")
    elif choice == "findings":
        picked = findings
    elif choice == "impression":
        picked = impression
    elif choice == "findings|impression":
        picked = findings or impression
    else:
        picked = _squash(f"{findings} {impression}")
    if picked:
        return picked, ""
    wanted = {"findings": "FINDINGS", "impression": "IMPRESSION"}.get(choice, "FINDINGS or IMPRESSION")
    hint = (
        " (set data.reports.section=findings|impression to fall back to the impression)"
        if choice == "findings" and impression
        else ""
    )
    return "", f"report has no {wanted} section{hint}"


def clean_r2gen(report: str) -> str:
    """R2Gen's report cleaning (`clean_report_mimic_cxr`, equal to `clean_report_iu_xray` on text without newlines,
    runs of spaces or "__"): lower-case, numbered lists flattened, punctuation removed, sentences joined by " . ".

    R2Gen's quirks are kept so that scores compare with published numbers: its empty-sentence filter never fires
    (a string is never `[]`), so an empty sentence stays as an empty slot between two " . ".
    """
    t = report.replace("\n", " ")
    for _ in range(7):
        t = t.replace("__", "_")
    for _ in range(6):
        t = t.replace("  ", " ")
    for _ in range(8):
        t = t.replace("..", ".")
    t = t.replace("1. ", "")
    for n in range(2, 6):
        t = t.replace(f". {n}. ", ". ")
    for n in range(2, 6):
        t = t.replace(f" {n}. ", ". ")

    def sentence(s: str) -> str:
        s = s.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
        return _R2GEN_PUNCT.sub("", s)

    return " . ".join(sentence(s) for s in t.strip().lower().split(". ")) + " ."


def apply_rules(text: str, cfg: ReportConfig) -> str:
    """Placeholders (`cfg.deid`), then cleaning (`cfg.clean`), then the length limit (`cfg.max_words`)."""
    if cfg.deid == "unify":
        text = _DEID.sub(PLACEHOLDER, text)
    elif cfg.deid == "drop":
        text = _squash(_DEID.sub(" ", text))
    if cfg.clean == "r2gen" and text.strip():
        text = clean_r2gen(text)
    if cfg.max_words:
        words = text.split()
        if len(words) > cfg.max_words:
            text = " ".join(words[: cfg.max_words])
    return text


def rules_metadata(cfg: ReportConfig) -> dict[str, object]:
    """What a prepared data set records about its report text."""
    return {**asdict(cfg), "order": ["section", "deid", "clean", "max_words"]}
