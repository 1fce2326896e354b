"""A rule-based finding labeler for report text, in the spirit of the CheXpert / NegBio labelers.

Contract: `label_report(text, label_set)` maps every observation of a `LabelSet` to "positive", "negative",
"uncertain" or None (not mentioned); `binary_labels(texts, uncertain_as, label_set)` turns that into an int8
[N, len(names)] matrix. Two label sets ship: `SYNTHETIC` (the default; the 8 findings of `medvl.findings`, which the
synthetic data set draws) and `medvl.evaluate.chexpert.CHEXPERT` (the 14 CheXpert observations). Same text, same
labels; no models, no downloads, precompiled regexes only (thousands of reports/s on one CPU core).

Method:

1. Text is lower-cased, IU X-ray's "XXXX" anonymization tokens are blanked out, and the text is cut into sentences
   (also at FINDINGS:/IMPRESSION:/... headers) and sentences into clauses at turns ("but", "however", ";", ...) that
   no cue crosses. Clauses are cut again into sub-clauses at "which", ", with", "and there is", ...: cues that
   precede a mention stop there, cues that follow one may reach across them ("blunting ..., which may represent").
2. Mentions are found with a regex table per finding (`MENTIONS`). Mentions joined only by list glue
   ("pneumothorax, pleural effusion, or focal consolidation") form a group that shares the text after its last
   member, so "Consolidation and effusion have resolved" negates both.
3. A mention is uncertain when it is hedged itself ("borderline enlarged heart") or an uncertainty cue ("may",
   "possible", "possibility of", "cannot be excluded", "not entirely excluded", "versus", "likely", "concern for",
   "correlation for", hypothetical "if" and "evaluation for", ...; not "age-indeterminate", which dates a fracture
   that is there) precedes it in its sub-clause, unless a negation cue there is nearer to it ("possible effusion, no
   pneumothorax"), precedes the hedge with no comma between them ("no pleural line to suggest pneumothorax"), or the
   hedge is the purpose of a negated list ("no effusion, pneumothorax or opacity to suggest pneumonia"). "No new X"
   is uncertain. It is negative when a negation cue ("no", "without", "free of", "clear of", "negative for",
   "absence of", "resolved", "clearing / disappearance / drainage of", "history of", "rather than", "not", "nor",
   ...) precedes it in its sub-clause or the mention itself is negated ("heart is not enlarged"); pseudo-negations
   ("no change in", "without interval increase of", "not only", "almost / partially resolved", "has not
   resolved": what is left is still there) negate nothing. Otherwise the few words after its group decide: a hedge
   ("... cannot be (entirely) excluded", "... versus scarring", "..., which may represent", "... is in the
   differential", "... is another consideration") makes it uncertain, a post-negation ("... is not seen", "... has
   resolved", "... have been removed", "... are clear") negative. Anything else is positive.
   A label set may add CheXpert's rules (`LabelSet.alternatives`): "X or Y" and "X is not well seen / not well
   demonstrated" are uncertain; and it may read fewer hedges (`LabelSet.not_hedges`: CheXpert's rule files hedge
   "less likely", not "likely").
4. Normal statements that do not name the finding (`NORMAL`) are negative mentions: "heart size is normal",
   "cardiomediastinal silhouette is within normal limits" -> cardiomegaly; "pleural spaces are clear" -> pleural
   effusion and pneumothorax; "costophrenic angles are sharp" -> pleural effusion.
5. Label sets may also drop text that is not a mention although a pattern matches inside it (`unmention`), mark
   mentions that are at most uncertain (`weak`: "vascular congestion" for edema) and read statements that make an
   observation uncertain (`stable`: "heart size is stable"); an explicit negation in the same sentence overrides
   a weak mention or statement.
6. Several mentions of a finding combine as positive > uncertain > negative. `label_mentions` returns each mention
   with its label, text and clause, which is what explains a label.

The context rules were measured against medspaCy's ConText (its default rules on the same mention patterns) on
real IU X-ray reports (benchmarks/labeler_agreement.py): this engine agrees better with the indexers' labels and
runs more than ten times faster, so it stays.

Decisions where the brief left room (CheXpert's choices where it has one):
- edema includes pulmonary/vascular congestion; "soft tissue", "subcutaneous", "laryngeal" and "facial" edema are
  not pulmonary edema and are ignored.
- support devices are tubes, lines, catheters, ports, pacemakers/AICDs and drains inside the patient. Sternotomy
  wires, surgical clips, stents, valve replacements and external monitor leads are not (they are post-surgical
  hardware or outside the body).
- nodule/mass includes nodular opacities/densities and masses, not granulomas.
- atelectasis includes lobar/lung collapse but not "volume loss" alone (common after lobectomy).
- pleural effusion includes blunting of the costophrenic angles and pleural fluid; pericardial, joint and
  suprapatellar effusions are not pleural effusions.
- "consistent with" and "compatible with" are confident radiology wording (positive), unlike "suggestive of".
- "No change in the effusion" / "without interval change of" are not negations.

Its behaviour is pinned by tests/test_evaluate.py, tests/test_labeler.py, tests/test_chexpert_labeler.py and
tests/test_chexpert_rules.py.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from medvl.findings import FINDINGS

POSITIVE, NEGATIVE, UNCERTAIN = "positive", "negative", "uncertain"
_RANK = {None: 0, NEGATIVE: 1, UNCERTAIN: 2, POSITIVE: 3}

# A word that talks about the heart: "cardiac monitor leads" or "cardiac pacemaker" do not.
_HEART = (
    r"(?:\bheart\b|\bcardio\s?mediastinal\b|\bcardiac\b(?!\s+(?:monitor|pacer|pacemaker|device|leads?|wires?|"
    r"valves?|surgery|catheter|apex|failure)))"
)
_HEART_NOUN = (
    r"(?:heart(?:\s+size|\s+silhouette)?|cardiac\s+(?:silhouette|shadow|size|contours?)|"
    r"cardio\s?mediastinal\s+(?:silhouette|contours?|size))"
)

MENTIONS: dict[str, str] = {
    "cardiomegaly": (
        rf"cardiomegaly|cardiac\s+enlargement|enlarge(?:d|ment\s+of\s+the)\s+(?:\w+\s+)?{_HEART_NOUN}"
        rf"|{_HEART_NOUN}\s+(?:\w+\s+){{0,3}}?enlarged|heart\s+(?:size\s+)?(?:is\s+)?(?:\w+\s+)?large\b"
        rf"|\blarge\s+heart|(?:increased|borderline)\s+heart\s+size|heart\s+size\s+(?:is\s+)?increased"
        rf"|heart\s+(?:size\s+)?(?:is\s+)?borderline"
    ),
    "pleural_effusion": (
        r"(?<!pericardial )(?<!joint )(?<!suprapatellar )(?<!knee )\beffusions?\b"
        r"|hydropneumothora(?:x|ces)|\bpleural\s+fluid"
        r"|blunt(?:ing|ed)\s+(?:of\s+)?(?:the\s+)?(?:[a-z]+\s+){0,2}costophrenic"
        r"(?:\s+(?:angles?|sulc[iu]s?|recess(?:es)?)\b)?"
        r"|costophrenic\s+(?:(?:angles?|sulc[iu]s?|recess(?:es)?)\s+)?(?:(?:are|is|remains?)\s+)?"
        r"(?:\w+\s+)?blunt(?:ing|ed)"
    ),
    "pneumothorax": r"\w*pneumothora(?:x|ces)\b|\bpleural\s+air\b",
    "consolidation": r"consolidat\w*|\bair[\s-]?space\s+(?:disease|opacit\w*|process|densit\w*)",
    "nodule_mass": r"\bnodul(?:es?\b|ar(?:[\s-]+like)?\s+(?:opacit|densit)\w*)|\bmass(?:es)?\b",
    "atelectasis": (
        r"atelecta\w*|\bcollapsed?\s+(?:\w+\s+){0,3}?(?:lung|lobe)s?\b|\b(?:lung|lobe|lobar)\s+collapse"
        r"|\bcollapse\s+of\s+the\s+(?:\w+\s+){0,4}?(?:lung|lobes?)\b"
    ),
    "edema": (
        r"(?<!soft tissue )(?<!subcutaneous )(?<!laryngeal )(?<!facial )\bedema\b"
        r"|vascular\s+congestion|pulmonary\s+congestion"
    ),
    "support_devices": (
        r"endotracheal|\bet\s+tube|tracheostomy|nasogastric|\bng\s+tube|orogastric|\bog\s+tube"
        r"|feeding\s+tube|enteric\s+(?:tube|catheter)|gastrostomy\s+tube|catheter"
        r"|central\s+(?:venous\s+)?line|\bpicc\b|\bpic\s+line|port-?a-?cath|mediport"
        r"|\bchest\s+(?:wall\s+)?port\b|pacemaker|\bpacer\b|\baicd\b|\bicd\b|defibrillator|chest\s+tube"
        r"|pigtail|pacing\s+(?:wire|lead)s?"
        r"|(?:pacemaker|pacer|aicd|icd)\s+leads?|\bleads?\s+(?:in|terminat)|swan-?ganz"
        r"|intra-?aortic\s+balloon|\biabp\b"
    ),
}
NORMAL: dict[str, str] = {
    "cardiomegaly": (
        rf"{_HEART}[^;]{{0,80}}?(?:\bnormal\b|\bunremarkable\b|\bwithin\s+(?:normal\s+)?limits\b"
        rf"|\bnot\s+(?:\w+\s+)?enlarged\b)|\bnormal\s+(?:[a-z]+\s+){{0,6}}?{_HEART}"
    ),
    "pleural_effusion": (
        r"\bpleura(?:l\s+(?:spaces?|surfaces?))?\b[^;]{0,80}?(?:\bclear\b|\bnormal\b|\bunremarkable\b"
        r"|\bno\s+(?:acute\s+)?abnormalit)|costophrenic\s+(?:(?:angles?|sulci|recesses)\s+)?"
        r"(?:(?:are|is)\s+)?(?:clear|sharp|normal|preserved)|sharp\s+costophrenic"
    ),
    "pneumothorax": (
        r"\bpleura(?:l\s+(?:spaces?|surfaces?))?\b[^;]{0,80}?(?:\bclear\b|\bnormal\b|\bunremarkable\b"
        r"|\bno\s+(?:acute\s+)?abnormalit)"
    ),
}

# "almost completely resolved", "partially resolved": what is left is still there, a pseudo-negation ("has not
# resolved" is not a negation either).
_PARTLY = "".join(
    rf"(?<!{w} )(?<!{w} completely )"
    for w in ("almost", "nearly", "partially", "partly", "largely", "mostly", "incompletely", "not")
)
_RESOLVED = rf"(?=resolved\b){_PARTLY}resolved"  # the lookahead first: the lookbehinds run only where it matches
_NOT_A_NEGATION = r"(?!\s+(?:\w+\s+){0,2}?(?:change|increase|decrease|worsening|improvement|progression|difference)\b)"
_NEGATION = re.compile(  # the lookahead: as in _UNCERTAIN
    rf"(?=\b)(?:\bno\b{_NOT_A_NEGATION}|\bwithout\b{_NOT_A_NEGATION}|\bnot\b(?!\s+only\b)|\bnor\b|\bfree\s+of\b"
    r"|\bclear\s+of\b|\bclear\s*$|\bnegative\s+for\b|\babsence\s+of\b|\babsent\b|\bresolution\s+of\b"
    rf"|\b{_RESOLVED}\b|\b(?:clearing|disappearance|drainage)\s+of\b"
    r"|\bremoval\s+of\b|\bhistory\s+of\b|\brather\s+than\b|\bdeny|\bexclude[sd]?\b(?!\s+(?:by|on))"
    r"|\bruled?\s+out\b)"
)
# Every cue starts at a word boundary (or is "?"): the lookahead rejects other positions before the alternatives
# are tried one by one, which makes the scan several times faster and matches the same text.
_UNCERTAIN_CUES = (
    r"(?:\bmay\b|\bmight\b|\bcould\b|\bpossibl[ey]\b|\bprobabl[ey]\b|\bquestionabl[ey]\b"
    r"|\bquestion(?:\s+of)?\b"
    r"|\bsuspicious\s+for\b|\bsuspect\w*|\bconcerning\s+for\b|\bworrisome\s+for\b|\bsuggest\w*|\blikely\b"
    r"|\bcannot\s+(?:be\s+)?(?:excluded?|ruled?\s+out)|\bcan\s+not\s+(?:be\s+)?(?:excluded?|ruled?\s+out)"
    r"|\bnot\s+(?:be\s+)?(?:excluded|ruled\s+out)|\bdifferential\b|\bversus\b|\bvs\b|\bequivocal\b|\bborderline\b"
    r"|\bpotential\b|\bmimic\w*|\band/or\b|\beither\b|\bfavou?r(?:ed|s)?\b|\?"
    r"|\bindeterminate\b(?<!age-indeterminate)(?<!age indeterminate)"
    r"|\bpossibility\s+of\b|\bcorrelat\w*\s+(?:\w+\s+)?for\b|\bevaluat\w*\s+(?:for|of)\b"
    r"|\bif\b|\bconcern\s+for\b|\bdifficult\s+to\s+(?:\w+\s+)?exclude\b|\bnot\s+(?:entirely|completely|definitely)\s+"
    r"(?:be\s+)?(?:excluded|ruled\s+out)|\bless\s+likely\b)"
)
_UNCERTAIN = re.compile(rf"(?=\b|\?){_UNCERTAIN_CUES}")
# A hedge that is the purpose of a negated finding: "no opacity to suggest pneumonia" negates pneumonia.
_PURPOSE = re.compile(r"\bto\s+(?:\w+\s+)?$")
# "no new consolidation" is uncertain (CheXpert's pre-negation uncertainty).
_NO_NEW = re.compile(r"\s+(?:\w+\s+)?new\b")
# Text that may sit between two mentions of one coordinated list: ", ", " or ", ", and focal ", ...
_LIST_GLUE = re.compile(
    r"(?:\s*,\s*|\s+)(?:(?:and|or|and/or|nor)\s+)?(?:(?!(?:the|a|an|which|that|is|are|was|were"
    r"|versus|vs"
    r"|has|have|may|might|could|with|without|to|of|in|no|not|represent\w*|reflect\w*|suggest\w*"
    r"|likely|possibl\w*|probabl\w*)\b)[a-z-]+\s+){0,3}"
)
# After a mention (group): a few words that start no new subject ("effusion on the left"), then the verb phrase
# that negates or hedges it.
_WORDS = r"(?:\s+(?!(?:and|or|but|with|while|whereas)\b)[a-z0-9/-]+)"
_NEGATION_AFTER = re.compile(
    rf"{_WORDS}{{0,7}}?\s+(?:(?:is|are|was|were|has\s+been|have\s+been)\s+)?(?:"
    r"(?:not|no\s+longer)\s+(?:\w+[\s-])?(?:seen|identified|present|visualized|visible|appreciated|noted|evident"
    rf"|demonstrated|detected|apparent)|(?:has|have)\s+(?:\w+\s+)?(?:{_RESOLVED}|cleared)"
    rf"|{_RESOLVED}|cleared|removed|absent)\b|\s+(?:is|are|remains?)\s+clear\b"
)

_UNCERTAIN_AFTER = re.compile(
    rf"{_WORDS}{{0,6}}?\s+(?:(?:is|are|was|were)\s+)?(?:(?:cannot|can\s+not)\s+be\s+(?:\w+ly\s+)?"
    r"(?:excluded|ruled\s+out)|not\s+(?:be\s+)?(?:\w+ly\s+)?(?:excluded|ruled\s+out)|possible\b"
    # "pneumonia is in the differential", "infection is another consideration"
    r"|(?:also\s+)?in\s+the\s+differential\b|(?:also\s+)?(?:a|another)\s+(?:\w+\s+)?consideration\b"
    r"|suspected\b|difficult\s+to\s+(?:\w+\s+)?exclude\b"
    r"|questioned\b|likely\b|(?:may|might|could)\s+be\s+(?:present|seen)\b)"
    rf"|{_WORDS}{{0,2}}?\s+(?:versus|vs|and/or)\b|\s*\?"
    rf"|{_WORDS}{{0,7}}?,?\s+which\s+(?:\w+\s+){{0,3}}?(?:may|might|could|probably|likely|possibly)\b"
)

_SENTENCE = re.compile(
    r"(?<!\bvs\.)(?<=[.!?])\s+|\n\s*\n|\b(?:findings|impression|indication|comparison|history"
    r"|technique)\s*:"
)
# Cues never reach across these.
_CLAUSE_BREAK = re.compile(
    r";|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\baside\s+from\b"
    r"|\bapart\s+from\b|\bwhereas\b|\botherwise\b|[:()]"
)
# Cues before a mention do not reach across these; cues after a mention may ("X, which may represent ...").
_SUBCLAUSE_BREAK = re.compile(
    r"\bwhich\b|,\s+with\b|(?:,\s*|\s+)and\s+(?=there\s+(?:is|are)\b)"
    r"|,\s*(?=there\s+(?:is|are)\b)"
)
_SPAN_NEGATION = re.compile(r"\bnot\b|\bno\b")  # "heart is not enlarged" is one mention
_SPAN_OR = re.compile(r"\bor\b")  # "heart size is at the upper limits of normal or mildly enlarged"
_NO_BEFORE_INCREASE = re.compile(r"\b(?:no|without)\s+(?:\w+\s+){0,2}$")
# One of two alternatives: "atelectasis or scarring", "scarring or atelectasis" (not "no effusion or pneumothorax",
# which the negation decides first).
_OR_AFTER = re.compile(r"\s*,?\s+(?:and/)?or\s+(?!no\b|other\b)[a-z]")
# "X is not well seen / not clearly visualized": uncertain under CheXpert's rules.
_POORLY_SEEN_AFTER = re.compile(
    rf"{_WORDS}{{0,6}}?\s+(?:(?:is|are|was|were)\s+)?not\s+(?:well|clearly)[\s-]"
    r"(?:seen|visualized|evaluated|demonstrated)\b"
)
_OR_GLUE = re.compile(r"\bor\b")
_OR_BEFORE = re.compile(r"\b[a-z]{3,}\s+(?:and/)?or\s+(?:\w+\s+){0,2}$")
_XXXX = re.compile(r"\bx{2,}\b")
_SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class LabelSet:
    """A set of observations the labeler reads, with their mention and normal-statement patterns.

    `extra_mentions` are observations labeled like the others but not returned; `finalize` may read them (and the
    labels) to derive labels such as CheXpert's "No Finding". `unmention`: text that is not a mention of the
    observation although a mention pattern matches inside it ("calcified nodule"). `weak`: mentions that are at most
    uncertain ("vascular congestion" for edema); `stable`: statements that make an observation uncertain when the
    clause says nothing else about it ("heart size is stable"); an explicit negation of the observation in the same
    sentence overrides both. `alternatives`: "X or Y" makes a mention that is not negated uncertain. `not_hedges`:
    uncertainty cues of the engine that this label set does not read as hedges (a pattern tried where a cue starts:
    CheXpert's rule files hedge "less likely" and "suggestion of", not "likely" or "suggestive of"). Patterns see
    lower-cased text.
    """

    name: str
    names: tuple[str, ...]
    mentions: dict[str, str]
    normal: dict[str, str] = field(default_factory=dict)
    extra_mentions: dict[str, str] = field(default_factory=dict)
    finalize: Callable[[dict[str, str | None]], None] | None = None
    unmention: dict[str, str] = field(default_factory=dict)
    weak: dict[str, str] = field(default_factory=dict)
    stable: dict[str, str] = field(default_factory=dict)
    alternatives: bool = False
    not_hedges: str = ""

    @cached_property
    def uncertain(self) -> re.Pattern[str]:
        """The uncertainty cues this label set reads before and inside a mention."""
        if not self.not_hedges:
            return _UNCERTAIN
        return re.compile(rf"(?=\b|\?)(?!(?:{self.not_hedges}))(?:{_UNCERTAIN_CUES})")

    @cached_property
    def compiled(self) -> tuple[dict[str, re.Pattern[str]], dict[str, re.Pattern[str]]]:
        mentions = {**self.mentions, **self.extra_mentions}
        # Mentions start at a word boundary; checking it first makes the long alternations cheaper.
        return (
            {name: re.compile(rf"\b(?:{p})") for name, p in mentions.items()},
            {name: re.compile(p) for name, p in self.normal.items()},
        )

    @cached_property
    def sentence_mentions(self) -> Callable[[str], tuple[Mention, ...]]:
        """The labeled mentions of one sentence, memoized: a sentence is labeled the same wherever it stands, and
        report corpora repeat sentences ("No pneumothorax.": 5,519 sentences of 1,180 IU X-ray reports are 2,477
        distinct ones), so each distinct sentence is read once."""
        return functools.lru_cache(maxsize=1 << 16)(lambda sentence: _sentence_mentions(sentence, self))

    def __getstate__(self) -> dict[str, object]:
        # The sentence memo (a closure) stays behind; a copy builds its own.
        return {k: v for k, v in self.__dict__.items() if k != "sentence_mentions"}

    @cached_property
    def compiled_rules(self) -> tuple[dict[str, re.Pattern[str]], ...]:
        """(unmention, weak, stable) patterns."""
        return tuple(
            {name: re.compile(p) for name, p in table.items()} for table in (self.unmention, self.weak, self.stable)
        )


SYNTHETIC = LabelSet("synthetic-8", FINDINGS, MENTIONS, NORMAL)


def _sentences(text: str) -> list[str]:
    """The sentences of a report: lower-cased, anonymization tokens blanked and runs of spaces collapsed."""
    return _SENTENCE.split(_SPACES.sub(" ", _XXXX.sub(" ", text.lower())))


def _last(pattern: re.Pattern[str], text: str, outside: re.Match[str] | None = None) -> re.Match[str] | None:
    """The last match of `pattern` in `text` that does not overlap `outside` ("not" inside "can not exclude")."""
    last = None
    for match in pattern.finditer(text):
        if outside is None or match.end() <= outside.start() or match.start() >= outside.end():
            last = match
    return last


def _classify(
    before: str,
    span: str,
    after: str,
    alternatives: bool = False,
    or_group: bool = False,
    uncertain: re.Pattern[str] = _UNCERTAIN,
) -> str:
    """Label one mention from its sub-clause before it, its own text and the text after its coordinated list.

    With `alternatives` (CheXpert's rules), a mention offered as one of two alternatives ("atelectasis or scarring")
    is uncertain unless it is negated, and so is one that is "not well seen". `or_group`: the mention's coordinated
    list joins its members with "or". `uncertain`: the uncertainty cues read before and inside the mention.
    """
    if uncertain.search(span) or (alternatives and _SPAN_OR.search(span)):
        return UNCERTAIN
    unc = _last(uncertain, before)
    neg = _last(_NEGATION, before, unc)
    if neg is not None and neg.group() == "not" and "," in before[neg.end() :]:
        neg = None  # "not" negates its own predicate: "heart is not enlarged, small effusion"
    if neg is None and span.startswith("increase") and _NO_BEFORE_INCREASE.search(before):
        return NEGATIVE  # "no interval increase in heart size": the pseudo-negation is the mention itself
    if (
        neg is not None
        and neg.group() in ("no", "without")
        and _NO_NEW.match(before, neg.end())
        and before[neg.end() :].count(" ") <= 3
    ):
        return UNCERTAIN  # "no new consolidation"
    if unc is not None:
        if neg is None:
            return UNCERTAIN
        if neg.start() < unc.start() and _PURPOSE.search(before, 0, unc.start()):
            return NEGATIVE  # "no effusion, pneumothorax or opacity to suggest pneumonia"
        if neg.start() < unc.start() and "," in before[neg.end() : unc.start()]:
            return UNCERTAIN  # "no pneumothorax, likely atelectasis": the hedge is the nearer, separate cue
        return NEGATIVE  # "possible effusion, no pneumothorax"; "no pleural line to suggest pneumothorax"
    if neg is not None or _SPAN_NEGATION.search(span):
        return NEGATIVE
    if _UNCERTAIN_AFTER.match(after) or (alternatives and _POORLY_SEEN_AFTER.match(after)):
        return UNCERTAIN
    if _NEGATION_AFTER.match(after):
        return NEGATIVE
    if alternatives and (or_group or _OR_AFTER.match(after) or _OR_BEFORE.search(before)):
        return UNCERTAIN
    return POSITIVE


@dataclass(frozen=True)
class Mention:
    """One mention the labeler read: the observation, its label, the matched text, the clause it sits in, the
    number of its sentence, and whether it is a weak mention (see `LabelSet`)."""

    name: str
    label: str
    text: str
    sentence: str
    sentence_index: int = 0
    weak: bool = False


def _clause_mentions(clause: str, label_set: LabelSet, index: int = 0) -> list[Mention]:
    """The labeled mentions of one clause, normal statements included (as negative mentions)."""
    mention_re, normal_re = label_set.compiled
    unmention_re, weak_re, stable_re = label_set.compiled_rules
    unmentioned = {name: [m.span() for m in pattern.finditer(clause)] for name, pattern in unmention_re.items()}
    mentions = sorted(
        (m.start(), m.end(), name)
        for name, pattern in mention_re.items()
        for m in pattern.finditer(clause)
        if not any(m.start() < b and a < m.end() for a, b in unmentioned.get(name, ()))
    )
    # Post-cues of a mention are read after the last member of its coordinated list.
    group_end = [0] * len(mentions)
    or_group = [False] * len(mentions)
    for i in range(len(mentions) - 1, -1, -1):
        stop = mentions[i][1]
        group_end[i] = stop
        if i + 1 < len(mentions):
            nxt = mentions[i + 1][0]
            if nxt < stop or _LIST_GLUE.fullmatch(clause, stop, nxt):
                group_end[i] = max(stop, group_end[i + 1])
                or_group[i] = or_group[i + 1] or (nxt > stop and _OR_GLUE.search(clause, stop, nxt) is not None)
    breaks = [m.end() for m in _SUBCLAUSE_BREAK.finditer(clause)]
    out = []
    seen = set()
    for (start, stop, name), after_from, in_or in zip(mentions, group_end, or_group, strict=True):
        sub_start = max((b for b in breaks if b <= start), default=0)
        found = _classify(
            clause[sub_start:start],
            clause[start:stop],
            clause[after_from:],
            label_set.alternatives,
            in_or,
            label_set.uncertain,
        )
        weak = name in weak_re and weak_re[name].fullmatch(clause, start, stop) is not None
        if weak and found == POSITIVE:
            found = UNCERTAIN
        out.append(Mention(name, found, clause[start:stop], clause, index, weak))
        seen.add(name)
    for name, normal in normal_re.items():
        if name not in seen:
            match = normal.search(clause)
            if match:
                out.append(Mention(name, NEGATIVE, match.group(), clause, index))
                seen.add(name)
    for name, stable in stable_re.items():
        if name not in seen:
            match = stable.search(clause)
            if match:
                out.append(Mention(name, UNCERTAIN, match.group(), clause, index, weak=True))
    return out


def _sentence_mentions(sentence: str, label_set: LabelSet) -> tuple[Mention, ...]:
    """The labeled mentions of one sentence (as `_sentences` returns it), numbered as sentence 0."""
    return tuple(
        m
        for clause in _CLAUSE_BREAK.split(sentence)
        if clause and clause.strip()
        for m in _clause_mentions(clause.strip(), label_set)
    )


def label_mentions(text: str, label_set: LabelSet | None = None) -> list[Mention]:
    """Every mention of `label_set`'s observations in `text`, in reading order, each with its own label."""
    label_set = label_set or SYNTHETIC
    read = label_set.sentence_mentions
    return [
        m if k == 0 else Mention(m.name, m.label, m.text, m.sentence, k, m.weak)
        for k, sentence in enumerate(_sentences(text))
        for m in read(sentence)
    ]


def label_report(text: str, label_set: LabelSet | None = None) -> dict[str, str | None]:
    """Label one report.

    Args:
        text: report text, any case, with or without FINDINGS:/IMPRESSION: headers.
        label_set: what to read; `SYNTHETIC` (the default: the synthetic data set's 8 findings) or
            `medvl.evaluate.chexpert.CHEXPERT` (the 14 CheXpert observations).

    Returns:
        Every name of `label_set.names` -> "positive", "negative", "uncertain" or None (not mentioned).
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    label_set = label_set or SYNTHETIC
    labels: dict[str, str | None] = dict.fromkeys([*label_set.names, *label_set.extra_mentions])
    mentions = label_mentions(text, label_set)
    negated = {(m.name, m.sentence_index) for m in mentions if m.label == NEGATIVE and not m.weak}
    for mention in mentions:
        if mention.weak and (mention.name, mention.sentence_index) in negated:
            continue  # "cardiomegaly with vascular prominence without overt edema": the explicit negation wins
        if _RANK[mention.label] > _RANK[labels[mention.name]]:
            labels[mention.name] = mention.label
    if label_set.finalize is not None:
        label_set.finalize(labels)
    return {name: labels[name] for name in label_set.names}


UNCERTAIN_POLICIES = {"positive": 1, "negative": 0}


def binary_labels(texts: Sequence[str], uncertain_as: int | str = 1, label_set: LabelSet | None = None) -> np.ndarray:
    """Label many reports as a 0/1 matrix.

    Args:
        texts: report texts.
        uncertain_as: the value of an uncertain finding: 1 or "positive" counts hedged findings as present (the
            "U-ones" policy, the usual choice when scoring generated reports), 0 or "negative" as absent.
        label_set: see `label_report`.

    Returns:
        int8 array [len(texts), len(label_set.names)]: 1 for positive (and uncertain under U-ones), 0 for negative,
        not mentioned (and uncertain under U-zeros).
    """
    uncertain_as = UNCERTAIN_POLICIES.get(uncertain_as, uncertain_as) if isinstance(uncertain_as, str) else uncertain_as
    if uncertain_as not in (0, 1):
        raise ValueError(f"uncertain_as must be 0/1 or one of {sorted(UNCERTAIN_POLICIES)}, got {uncertain_as!r}")
    label_set = label_set or SYNTHETIC
    value = {POSITIVE: 1, UNCERTAIN: uncertain_as, NEGATIVE: 0, None: 0}
    out = np.zeros((len(texts), len(label_set.names)), dtype=np.int8)
    for i, text in enumerate(texts):
        labels = label_report(text, label_set)
        out[i] = [value[labels[name]] for name in label_set.names]
    return out


__all__ = [
    "FINDINGS",
    "MENTIONS",
    "NORMAL",
    "NEGATIVE",
    "POSITIVE",
    "SYNTHETIC",
    "UNCERTAIN",
    "UNCERTAIN_POLICIES",
    "LabelSet",
    "Mention",
    "binary_labels",
    "label_mentions",
    "label_report",
]


def __getattr__(name: str) -> object:
    # `from medvl.evaluate.labeler import CHEXPERT` works too; the table lives in medvl.evaluate.chexpert, which
    # imports this module, hence the lazy import.
    if name == "CHEXPERT":
        from medvl.evaluate.chexpert import CHEXPERT

        return CHEXPERT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
