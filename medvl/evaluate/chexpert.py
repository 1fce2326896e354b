"""The 14 CheXpert observations for the rule-based labeler, following the Stanford CheXpert labeler's rules.

Contract: `CHEXPERT` (and the option `CHEXPERT_MESH`, see the end) is a `medvl.evaluate.labeler.LabelSet`;
`label_report(text, CHEXPERT)` returns the 14 observations of `CHEXPERT_14` -> "positive" / "negative" /
"uncertain" / None, read by the same mention, negation and uncertainty engine as the synthetic findings.
`CHEXPERT_5` names the five observations most papers also report (Atelectasis, Cardiomegaly, Consolidation, Edema,
Pleural Effusion).

Source: the phrase and rule files of stanfordmlgroup/chexpert-labeler (`phrases/mention`, `phrases/unmention`,
`patterns/negation.txt`, `pre_negation_uncertainty.txt`, `post_negation_uncertainty.txt`), re-expressed as
word-boundary regexes for medvl's engine (CheXpert matches substrings, then decides negation and uncertainty on a
dependency parse; medvl has no parser and reads cue words in the clause around a mention instead).
tests/test_chexpert_rules.py checks every phrase of CheXpert's mention lists.

- Mentions (`CHEXPERT_MENTIONS`) and unmentions (`CHEXPERT_UNMENTION`: "calcified nodule" is not a Lung Lesion,
  "pleural scar" not a Lung Opacity, "pericardial effusion" not a Pleural Effusion) follow CheXpert's lists.
- Negation: "no", "without", "not", "free/clear of", "negative for", "absence of", "resolved", "removal of",
  "history of", "rather than", "rule out", "... is not seen", "... has resolved", "clear X" ("cleared XXX"), normal
  statements ("heart size is normal", "within normal limits"), as in `negation.txt`; "no ... to suggest X" negates X.
- Uncertainty before negation (`pre_negation_uncertainty.txt`): "cannot exclude", "not (entirely) excluded", "no new
  X" (uncertain: "no new consolidation" does not say there is none). After negation
  (`post_negation_uncertainty.txt`): hedges ("may", "possible", "probable", "suspicious for", "concern for",
  "versus", "X or Y", "not well seen", ...); "heart size / cardiomediastinal silhouette is stable or unchanged"
  (`CHEXPERT_STABLE`); vascular congestion, pulmonary congestion, vascular prominence and indistinctness are at
  most uncertain Edema, "borderline heart size" at most uncertain Cardiomegaly (`CHEXPERT_WEAK`). Where the rule
  files name a hedge only in a narrower form, CHEXPERT reads that form alone (`LabelSet.not_hedges`): "less likely"
  (not "likely"), "suggestion of" (not "suggestive of", "suggesting"), "probable" / "possibly" / "presumably" (not
  "probably"), "borderline heart size" (not "borderline cardiomegaly" or "borderline enlarged", which grade an
  enlargement that is there).
- Aggregation: several mentions combine as positive > uncertain > negative; a positive or uncertain "CHF" / "heart
  failure" makes Cardiomegaly at least uncertain (it is also an Edema mention); "No Finding" is positive when no
  observation other than Support Devices is positive or uncertain and no other abnormality (CheXpert's
  `no_finding` list: emphysema, granuloma, blunting, scoliosis, ...: `OTHER_ABNORMALITY`) is positive or
  uncertain; otherwise it is None, never negative.

Departures, each with its reason:
- Hedges the rule files do not name at all are still hedges ("equivocal", "potential", "mimic", "either", "?",
  "indeterminate" but not "age-indeterminate", "possibility of", "difficult to exclude"), and so are hypotheticals
  ("if ...", "evaluation for"): CheXpert finds its hedges on a dependency parse, medvl has none and reads the
  words around a mention instead, and these words hedge in radiology reports.
- Aggregation: a positive mention wins over negative and uncertain ones. CheXpert's `aggregate.py` checks
  "negative and uncertain" before "negative and positive", so a report with all three is uncertain there, which
  none of its case comments describes.
- A weak mention (congestion, prominence, "stable heart size") does not outvote an explicit negation of the same
  observation in the same sentence: "cardiomegaly with vascular prominence without overt edema" is Edema negative
  (CheXpert: uncertain). Across sentences CheXpert's uncertain > negative holds.
- Anatomical nouns ("the heart", "heart size", "cardiac silhouette", "mediastinum", "mediastinal contour", ...) are
  mentions only with what is said of them: enlarged/widened/large/increase in (positive), normal/not enlarged
  (negative), stable or "borderline heart size" (uncertain); CheXpert reads a bare "the heart" or "contour" as a
  positive mention. A bare "contour" (diaphragm, spine) is not a mention at all; "cardiac silhouette and
  vascularity" is read as Cardiomegaly ("cardiac silhouette"), not Enlarged Cardiomediastinum.
- "Collapse" is Atelectasis only of a lung or lobe (not a vertebral body); "support" is a device only in "support
  device/apparatus", "life support" (not the verb).
- Support Devices unmentions: pleural, septal and Kerley lines, "line of sight", midline, "plate-like"
  (atelectasis), valve calcification (a native valve): CheXpert's substrings would count them. Also counted:
  pacing/AICD leads inside the patient, stimulators, and "tip in the SVC / cavoatrial junction / right atrium"
  (IU X-ray's de-identification often blanks the device's name: "right chest XXXX tip in the SVC").
  External monitor leads are not devices (as in CheXpert).
- Pleural Effusion unmentions also joint, knee, shoulder and suprapatellar effusions; Lung Opacity also
  pleuro-parenchymal scars; Lung Opacity does not count chest-wall thickening. Lung Opacity counts "ground glass"
  (an opacity by definition) and "airspace process" beyond CheXpert's list; interstitial prominence, interstitial
  thickening and peribronchial cuffing are not Lung Opacity (not in its list) but other abnormalities, as
  CheXpert's `no_finding` list ("prominen", "thickening", "cuffing") has them.
- Soft tissue, subcutaneous, laryngeal and facial edema are not pulmonary edema.
- "Fissure" (CheXpert's `no_finding` list) does not rule out No Finding: the minor and azygos fissures are normal
  anatomy; "tracheostomy" and "defib" there are devices, which never rule it out.
- Pneumonia unmentions "granulomatous infection / disease" (healed granulomatous disease, which CheXpert's own
  `no_finding` list names as "granuloma", so it still rules out No Finding) and an infection the report places in
  the past ("prior", "previous", "old", "healed", "residua / sequela of"): a historical mention, which CheXpert
  negates when it is written "history of" and ConText marks historical.
- Lung Lesion unmentions "calcified nodule" but not "noncalcified / uncalcified nodule", the very lesion that needs
  follow-up (CheXpert's substring "calcified nodul" drops it too).
- Support Devices also counts orthopedic hardware named otherwise: bone / suture anchors, internal fixation,
  prostheses (CheXpert's list has "hardware", "arthroplast", "plate", "screw"); not breast prostheses or implants.
- Fracture unmentions a broken device ("catheter fracture", "fractured sternal wires"): a device fault, not a bone
  fracture.

Measured against NLM's MeSH indexers on 2,365 IU X-ray reports (benchmarks/labeler_agreement.py), most remaining
disagreement is two rules of CheXpert's own that the indexers do not share: "X or Y" / "scarring or atelectasis"
(CheXpert: uncertain; the indexers code both), and scars and interstitial markings as Lung Opacity (the indexers
code them as "Cicatrix" and "Markings"). `CHEXPERT_MESH` is the option that reads reports as the indexers do on
those two points (the rest is `CHEXPERT`); it is not CheXpert's labeler, so scores made with it must say so.
"""

from __future__ import annotations

import dataclasses

from medvl.evaluate.labeler import MENTIONS, NEGATIVE, NORMAL, POSITIVE, UNCERTAIN, LabelSet

CHEXPERT_14: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
CHEXPERT_5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

_HEART_NOUN = r"(?:heart(?:\s+size|\s+silhouette|\s+shadow)?|cardiac\s+(?:silhouette|shadow|size|contours?))"
_MEDIASTINUM = r"(?:cardio\s?mediastin(?:um|al)|mediastin(?:um|al))"
_MEDIASTINUM_NOUN = (
    rf"(?:{_MEDIASTINUM}(?:\s+(?:silhouette|contours?|width|configuration|structures|shadow))?"
    r"|pericardial\s+silhouette)"
)
_PLEURAL_SCAR = (
    r"pleural\s+(?:thickening|scar\w*)|fibrothorax|\bfibros[ie]s\b"
    r"|pleur(?:al|o)[\s-]?(?:parenchymal|pericardial)\s+(?:scar\w*|thickening)"
    r"|pleuroparenchymal\s+scar\w*"
)
# Lung Opacity: CheXpert's list counts scars and interstitial markings too (`_SCAR_OR_MARKINGS`).
_OPACITY = (
    r"opaci\w*|infiltrat\w*|\bair[\s-]?space\s+(?:disease|process)"
    r"|increased\s+(?:\w+\s+)?densit(?:y|ies)|decreased\s+translucency"
    r"|interstitial\s+(?:pattern|lung\b)|reticular\s+(?:pattern|markings?)|reticulation|ground[\s-]glass"
    r"|peribronchial\s+thickening"
    r"|(?<!chest )wall\s+thickening"
)
_SCAR_OR_MARKINGS = r"interstitial\s+markings?|(?:parenchymal\s+)?\bscar(?:ring|s)?\b"
_ENLARGED = r"(?:widen\w*|enlarge\w*|prominen\w*)"
_STABLE = r"(?:stable|unchanged|not\s+changed)"

CHEXPERT_MENTIONS: dict[str, str] = {
    "Enlarged Cardiomediastinum": (
        rf"{_ENLARGED}\s+(?:of\s+the\s+)?(?:\w+\s+)?{_MEDIASTINUM_NOUN}"
        rf"|{_MEDIASTINUM_NOUN}\s+(?:(?:is|are|appears?|remains?)\s+)?(?:\w+\s+)?(?:widened|enlarged|prominent)\b"
        rf"|{_MEDIASTINUM_NOUN}\s+(?:widening|enlargement)"
    ),
    "Cardiomegaly": (
        rf"cardiomegaly|cardiac\s+enlargement|enlarge(?:d|ment\s+of\s+the)\s+(?:\w+\s+)?{_HEART_NOUN}"
        rf"|{_HEART_NOUN}\s+(?:\w+\s+){{0,3}}?enlarged|{_HEART_NOUN}\s+enlargement"
        rf"|{_HEART_NOUN}\s+(?:(?:is|remains?|appears?|was|has\s+become)\s+)?(?:\w+\s+){{0,2}}?large\b"
        rf"|\blarge\s+heart|(?:increased|borderline)\s+heart\s+size|heart\s+size\s+(?:is\s+)?increased"
        rf"|heart\s+(?:size\s+)?(?:is\s+)?borderline|increase\s+in\s+(?:the\s+)?{_HEART_NOUN}"
        rf"|{_HEART_NOUN}[^.;]{{0,50}}?\bnormal\s+or\s+(?:\w+\s+)?(?:enlarged|large)\b"
    ),
    "Lung Opacity": _OPACITY + "|" + _SCAR_OR_MARKINGS,
    "Lung Lesion": (
        r"\bnodul(?:es?\b|ar(?:[\s-]+like)?\s+(?:opaci|densit)\w*)|\bmass(?:es|like|-like)?\b|tumou?rs?\b"
        r"|neoplas\w*|carcinoma|cavitary\s+lesions?|\blump\b"
    ),
    "Edema": (
        r"(?<!soft tissue )(?<!subcutaneous )(?<!laryngeal )(?<!facial )\bedema\b"
        r"|vascular\s+congestion|pulmonary\s+congestion|\bchf\b|heart\s+failure|vascular\s+prominence"
        r"|indistinctness"
    ),
    "Consolidation": r"consolidat\w*",
    "Pneumonia": r"\w*pneumonia\w*|\binfecti\w*",
    "Atelectasis": MENTIONS["atelectasis"],
    "Pneumothorax": MENTIONS["pneumothorax"],
    "Pleural Effusion": r"\beffusions?\b|\bpleural\s+fluid",
    "Pleural Other": _PLEURAL_SCAR,
    "Fracture": r"fractur\w*",
    "Support Devices": (
        MENTIONS["support_devices"]
        + r"|\bdrains?\b|\bports?\b(?!able)|\bpicc\s+lines?|\bvalves?\b|hardware|arthroplast\w*|\bmarkers?\b"
        r"|\bdevices?\b|\bplates?\b|\bscrews?\b|cannula|apparatus|\bcoils?\b|\bsupport\s+(?:devices?|apparatus)"
        r"|\blife\s+support|equipment|\blines?\b|\btubes?\b|\btubing\b|defib\w*|\bstimulator\b"
        # orthopedic hardware by other names
        r"|\b(?:bone|suture)\s+anchors?\b|\binternal\s+fixation\b|\bprosthe(?:sis|ses|tic)\b"
        # IU X-ray's de-identification often blanks the device's name: "right chest XXXX tip in the SVC".
        r"|\btip\b(?=[^.;]{0,40}\b(?:svc|cavoatrial|caval[\s-]?atrial|vena\s+cava|right\s+atri\w*|atriocaval)\b)"
    ),
}
# Text inside which a mention pattern matches but which is not a mention (CheXpert's unmention lists, and more).
CHEXPERT_UNMENTION: dict[str, str] = {
    "Lung Lesion": r"(?<![\w-])calcified\s+nodul\w*",  # not "noncalcified nodule", a lesion
    # Healed granulomatous disease, and an infection the report places in the past.
    "Pneumonia": (
        r"granulomatous\s+(?:\w+\s+)?(?:infection|disease|process)"
        r"|\b(?:prior|previous|old|remote|healed|past)\s+(?:\w+\s+){0,3}?(?:pneumonia|infecti\w*)"
        r"|\b(?:residua|sequela)\w*\s+of\s+(?:\w+\s+){0,3}?(?:pneumonia|infecti\w*)"
    ),
    # A broken catheter, lead or wire is a device fault, not a bone fracture.
    "Fracture": (
        r"(?:catheter|line|lead|wire|tube|port|device|hardware|prosthe\w*|plate|screw)s?\s+fractur\w*"
        r"|fractured\s+(?:\w+\s+){0,2}?(?:catheter|line|lead|wire|tube|port|device|hardware|plate|screw)s?\b"
    ),
    "Lung Opacity": r"pleur(?:al|o)[\s-]?(?:(?:parenchymal|pericardial)\s+)?scar\w*|pleuroparenchymal\s+scar\w*",
    "Pleural Effusion": r"(?:pericardial|joint|suprapatellar|knee|glenohumeral|shoulder)\s+effusions?",
    "Support Devices": (
        r"(?:pleural|kerley(?:\s+b)?|septal|\bb|azygos|skin|fissural?|paraspinal|paratracheal"
        r"|paraspinous)[\s-]+lines?|plate[\s-]*like|\bvalves?\s+calcifi\w*"
        r"|calcifi\w*\s+(?:\w+\s+){0,2}valves?|\bline\s+of\s+sight|\bmid\s?line"
        # breast implants are not orthopedic hardware (see `prosthe` in the mentions), nor in CheXpert's list
        r"|\bbreast\s+(?:\w+\s+)?(?:prosthe\w*|implants?)"
    ),
}
# Mentions CheXpert's post-negation uncertainty rules make uncertain when they are not negated.
CHEXPERT_WEAK: dict[str, str] = {
    "Edema": r"vascular\s+congestion|pulmonary\s+congestion|vascular\s+prominence|indistinctness",
    # CheXpert hedges "borderline heart size" (post_negation_uncertainty.txt), not "borderline enlarged".
    "Cardiomegaly": r"borderline\s+heart\s+size|heart\s+(?:size\s+)?(?:is\s+)?borderline",
}
# "Heart size is stable", "stable cardiomediastinal silhouette": uncertain (CheXpert's post-negation uncertainty).
CHEXPERT_STABLE: dict[str, str] = {
    "Cardiomegaly": (
        rf"{_STABLE}\s+(?:\w+\s+)?{_HEART_NOUN}"
        rf"|\b{_HEART_NOUN}\s+(?:and\s+[a-z ]{{0,40}}?)?(?:is|are|remains?|appears?)\s+(?:\w+\s+)?"
        rf"{_STABLE}\b"
    ),
    "Enlarged Cardiomediastinum": (
        rf"{_STABLE}\s+(?:\w+\s+)?{_MEDIASTINUM_NOUN}"
        rf"|{_MEDIASTINUM_NOUN}\s+(?:and\s+[a-z ]{{0,40}}?)?(?:is|are|remains?|appears?)"
        rf"\s+(?:\w+\s+)?{_STABLE}\b"
    ),
}
# Normal statements that do not name the observation but negate it.
CHEXPERT_NORMAL: dict[str, str] = {
    "Enlarged Cardiomediastinum": (
        rf"{_MEDIASTINUM_NOUN}[^;]{{0,80}}?(?:\bnormal\b|\bunremarkable\b|\bwithin\s+(?:normal\s+)?limits\b"
        rf"|\bnot\s+(?:\w+\s+)?(?:widened|enlarged)\b)|\bnormal\s+(?:[a-z]+\s+){{0,6}}?{_MEDIASTINUM}"
    ),
    "Cardiomegaly": (
        r"(?:\bheart\b|\bcardiac\b(?!\s+(?:monitor|pacer|pacemaker|device|leads?|wires?|valves?|"
        r"surgery|catheter|apex|failure)))[^;]{0,80}?(?:\bnormal\b|\bunremarkable\b"
        r"|\bwithin\s+(?:normal\s+)?limits\b|\bnot\s+(?:\w+\s+)?enlarged\b)"
        r"|\bnormal\s+(?:[a-z]+\s+){0,6}?(?:\bheart\b|\bcardiac\b)"
    ),
    "Pleural Effusion": (
        r"\bpleura(?:l\s+(?:spaces?|surfaces?))?\b[^;]{0,80}?(?:\bclear\b|\bnormal\b|\bunremarkable\b"
        r"|\bno\s+(?:acute\s+)?abnormalit)|costophrenic\s+(?:(?:angles?|sulci|recesses)\s+)?"
        r"(?:(?:are|is)\s+)?(?:clear|sharp|normal|preserved)|sharp\s+costophrenic"
    ),
    "Pneumothorax": NORMAL["pneumothorax"],
}
# Abnormalities outside the 13 observations: positive or uncertain, they rule out "No Finding".
OTHER_ABNORMALITY = (
    r"emphysema\w*|hyperinfla\w*|hyperexpan\w*|granulom\w*|calcifi\w*|scoliosis|kyphos\w*|degenerat\w*"
    r"|osteophyt\w*|spondylo\w*|hernia\w*|tortu\w*|ectatic|ectasia|atheroscl\w*|eventration|\bcopd\b|bullae|bullous"
    r"|osteopeni\w*|metasta\w*|pneumomediastinum|pneumoperitoneum|cephalization|aspiration|bronchiectasis|fibros\w*"
    r"|elevat\w*\s+(?:\w+\s+){0,2}?hemidiaphragm|hemidiaphragm\s+(?:is\s+)?elevat\w*|deformit\w*|pleural\s+plaques?"
    r"|lymphadenopathy|adenopathy|thickening|\bcuffing\b|volume\s+loss|\bblunt\w*|contusion|hemorrhage|hematoma"
    r"|bronchitis|bronchiolitis|bronchospasm|asthma|airways?\s+disease|inflam\w*|hypertension|\bplaques?\b|bullet"
    r"|thoracentesis|arthropathy|osteodystrophy|aerophagia|irregular\s+lucency|aortic\s+disease"
    r"|interstitial\s+(?:prominence|disease)"
)
_OTHER = "_other_abnormality"
_HEART_FAILURE = "_heart_failure"


def _finalize(labels: dict[str, str | None]) -> None:
    """CheXpert's aggregation rules: heart failure -> Cardiomegaly uncertain; No Finding."""
    if labels.pop(_HEART_FAILURE) in (POSITIVE, UNCERTAIN) and labels["Cardiomegaly"] in (None, NEGATIVE):
        labels["Cardiomegaly"] = UNCERTAIN
    other = labels.pop(_OTHER)
    findings = [v for k, v in labels.items() if k not in ("Support Devices", "No Finding")] + [other]
    labels["No Finding"] = None if any(v in (POSITIVE, UNCERTAIN) for v in findings) else POSITIVE


CHEXPERT = LabelSet(
    "chexpert-14",
    CHEXPERT_14,
    CHEXPERT_MENTIONS,
    CHEXPERT_NORMAL,
    extra_mentions={_OTHER: OTHER_ABNORMALITY, _HEART_FAILURE: r"\bchf\b|heart\s+failure"},
    finalize=_finalize,
    unmention=CHEXPERT_UNMENTION,
    weak=CHEXPERT_WEAK,
    stable=CHEXPERT_STABLE,
    alternatives=True,
    # Hedges CheXpert's rule files name in a narrower form only: "less likely", "suggestion of", "probable",
    # "borderline heart size" (the last is a weak Cardiomegaly mention above).
    not_hedges=r"borderline\b|likely\b|suggest(?!ion\b)\w*|probably\b",
)

# The reading of NLM's MeSH indexers (see the module docstring): both alternatives of "X or Y" are present, and scars
# and interstitial markings are findings of their own (MeSH "Cicatrix", "Markings"), not Lung Opacity.
CHEXPERT_MESH = dataclasses.replace(
    CHEXPERT,
    name="chexpert-14-mesh",
    alternatives=False,
    mentions={**CHEXPERT_MENTIONS, "Lung Opacity": _OPACITY},
    extra_mentions={**CHEXPERT.extra_mentions, _OTHER: OTHER_ABNORMALITY + "|" + _SCAR_OR_MARKINGS},
)

__all__ = [
    "CHEXPERT",
    "CHEXPERT_14",
    "CHEXPERT_5",
    "CHEXPERT_MENTIONS",
    "CHEXPERT_MESH",
    "CHEXPERT_NORMAL",
    "CHEXPERT_STABLE",
    "CHEXPERT_UNMENTION",
    "CHEXPERT_WEAK",
    "OTHER_ABNORMALITY",
]
