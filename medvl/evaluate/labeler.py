"""A rule-based finding labeler for report text, in the spirit of the CheXpert / NegBio labelers.

For each finding in `medvl.findings.FINDINGS` a report is labeled positive, negative, uncertain or not mentioned:

1. the text is cut into sentences (also at FINDINGS:/IMPRESSION: headers) and sentences into clauses at "but",
   "however", ";" and similar turns, so a cue never reaches across them;
2. mentions are found with a regex table per finding (`MENTIONS`); a few normal-statement patterns (`NORMAL`, e.g.
   "heart size is normal") are negative mentions by themselves;
3. a mention is uncertain when an uncertainty cue ("may", "possible", "cannot be excluded", ...) precedes it in its
   clause or follows it; otherwise negative when a negation cue ("no", "without", "free of", "no evidence of", ...)
   precedes it in its clause, the mention itself is negated ("heart is not enlarged"), or a post-negation follows
   it ("... is not seen", "... has resolved");
4. several mentions of a finding combine as positive > uncertain > negative.

It is deliberately small and fast (compiled regexes, no parser); its behaviour is pinned by tests/test_labeler.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from medvl.findings import FINDINGS

POSITIVE, NEGATIVE, UNCERTAIN = "positive", "negative", "uncertain"
_RANK = {None: 0, NEGATIVE: 1, UNCERTAIN: 2, POSITIVE: 3}

_HEART = r"(?:heart|cardiac\s+(?:silhouette|shadow|size)|cardiomediastinal\s+silhouette|heart\s+size)"
MENTIONS: dict[str, str] = {
    "cardiomegaly": (rf"cardiomegaly|cardiac\s+enlargement|enlarge(?:d|ment\s+of\s+the)\s+(?:\w+\s+)?{_HEART}"
                     rf"|{_HEART}\s+(?:\w+\s+){{0,3}}?enlarged"),
    "pleural_effusion": (r"(?<!pericardial\s)(?<!pericardial\s\s)\beffusions?\b"
                         r"|blunting\s+of\s+the\s+(?:\w+\s+){0,2}costophrenic|costophrenic\s+(?:angle\s+)?blunting"),
    "pneumothorax": r"\w*pneumothora(?:x|ces)\b",
    "consolidation": r"consolidat\w*|air[\s-]?space\s+(?:disease|opacit\w*|process)",
    "nodule_mass": r"\bnodul(?:e|es|ar\s+opacit\w*)\b|\bmass(?:es)?\b",
    "atelectasis": r"atelecta\w*",
    "edema": r"\bedema\b|vascular\s+congestion|pulmonary\s+congestion",
    "support_devices": (r"endotracheal|\bet\s+tube|tracheostomy|nasogastric|\bng\s+tube|orogastric|feeding\s+tube"
                        r"|catheter|central\s+(?:venous\s+)?line|\bpicc\b|port-?a-?cath|pacemaker|\baicd\b"
                        r"|defibrillator|chest\s+tube|pacing\s+(?:wire|lead)s?|\bleads?\b\s+(?:in|terminat)"),
}
NORMAL: dict[str, str] = {
    "cardiomegaly": (rf"{_HEART}\s+(?:is\s+|are\s+|appears\s+|appear\s+|remains\s+)?(?:\w+\s+)?"
                     r"(?:normal|within\s+normal\s+limits|unremarkable|stable\s+and\s+normal)"
                     r"|normal\s+(?:heart|cardiac|cardiomediastinal)\s+(?:size|silhouette|contours?)"
                     r"|heart\s+(?:is\s+)?normal\s+in\s+size"),
}
_NEGATION_BEFORE = re.compile(
    r"\bno\b(?!\s+(?:interval\s+|significant\s+|appreciable\s+)?(?:change|increase|decrease|worsening|improvement))"
    r"|\bnot\b|\bnor\b|\bwithout\b|\bfree\s+of\b|\bclear\s+of\b|\bnegative\s+for\b|\babsence\s+of\b"
    r"|\bresolution\s+of\b|\brather\s+than\b|\bdeny|\bexclude[sd]?\b(?!\s+(?:by|on))")
_NEGATION_AFTER = re.compile(
    r"^[^.]{0,40}?\b(?:(?:is|are|was|were)\s+(?:not|no\s+longer)\s+(?:seen|identified|present|visualized|"
    r"appreciated|noted|evident|demonstrated)|has\s+resolved|have\s+resolved|resolved|removed|is\s+absent|are\s+absent)")
_UNCERTAIN_BEFORE = re.compile(
    r"\bmay\b|\bmight\b|\bcould\b|\bpossibl[ey]\b|\bprobabl[ey]\b|\bquestionable\b|\bsuspicious\s+for\b|"
    r"\bsuspect|\bconcerning\s+for\b|\bsuggest|\blikely\b|\bcannot\s+(?:be\s+)?exclude|\bcan\s+not\s+(?:be\s+)?exclude"
    r"|\bcannot\s+rule\s+out|\bdifferential\b|\bversus\b|\bvs\.?\b|\bequivocal\b|\bborderline\b|\bpotential\b"
    r"|\bquestion\s+of\b|\bcompatible\s+with\b|\bconsistent\s+with\b|\bmimic")
_UNCERTAIN_AFTER = re.compile(
    r"^[^.]{0,40}?(?:\bcannot\s+be\s+(?:excluded|ruled\s+out)|\bcan\s+not\s+be\s+(?:excluded|ruled\s+out)|"
    r"\bnot\s+(?:be\s+)?(?:excluded|ruled\s+out)|\bis\s+(?:possible|suspected|questioned)|\bmay\s+be\b|\?"
    r"|^\s*(?:versus|vs\.?)\s)")
# Cues never reach across these: a new clause starts after them.
_CLAUSE_BREAK = re.compile(r";|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\baside\s+from\b|"
                           r"\bapart\s+from\b|\bwhich\b|\bwhereas\b|,\s+(?:and\s+)?(?:there\s+is|there\s+are|with)\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\b(?:findings|impression|indication|comparison)\s*:", re.IGNORECASE)

_MENTION_RE = {name: re.compile(MENTIONS[name]) for name in FINDINGS}
_NORMAL_RE = {name: re.compile(p) for name, p in NORMAL.items()}


def _clauses(text: str) -> list[str]:
    out = []
    for sentence in _SENTENCE.split(text.lower().replace("xxxx", " ")):
        out += [c for c in _CLAUSE_BREAK.split(sentence) if c and c.strip()]
    return out


def _classify(clause: str, match: re.Match) -> str:
    before, after, span = clause[: match.start()], clause[match.end():], match.group(0)
    if _UNCERTAIN_BEFORE.search(before) or _UNCERTAIN_BEFORE.search(span) or _UNCERTAIN_AFTER.search(after):
        return UNCERTAIN
    if _NEGATION_BEFORE.search(before) or re.search(r"\bnot\b|\bno\b", span) or _NEGATION_AFTER.search(after):
        return NEGATIVE
    return POSITIVE


def label_report(text: str) -> dict[str, str | None]:
    """Every finding -> "positive", "negative", "uncertain" or None (not mentioned)."""
    labels: dict[str, str | None] = dict.fromkeys(FINDINGS)
    for clause in _clauses(text):
        for name in FINDINGS:
            if labels[name] == POSITIVE:
                continue
            for match in _MENTION_RE[name].finditer(clause):
                found = _classify(clause, match)
                if _RANK[found] > _RANK[labels[name]]:
                    labels[name] = found
            normal = _NORMAL_RE.get(name)
            if normal is not None and labels[name] is None and normal.search(clause):
                labels[name] = NEGATIVE
    return labels


def binary_labels(texts: Sequence[str], uncertain_as: int = 1) -> np.ndarray:
    """int8 [N, len(FINDINGS)]: 1 for positive (and for uncertain when `uncertain_as`=1), else 0."""
    value = {POSITIVE: 1, UNCERTAIN: uncertain_as, NEGATIVE: 0, None: 0}
    out = np.zeros((len(texts), len(FINDINGS)), dtype=np.int8)
    for i, text in enumerate(texts):
        labels = label_report(text)
        out[i] = [value[labels[name]] for name in FINDINGS]
    return out
