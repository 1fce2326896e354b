"""The CheXpert label set against CheXpert's own phrase lists and the sentences of issue 15.

`CHEXPERT_PHRASES` lists, per observation, the phrases of the Stanford CheXpert labeler's mention lists
(stanfordmlgroup/chexpert-labeler, `phrases/mention/*.txt` at 44ddeb3, MIT licence), written out here so the test
needs no download. Word stems of those lists ("atelecta", "opaci") are written as a word that contains them. Each
phrase must be read as its observation in a plain positive sentence and as negative after "No". Where
`medvl.evaluate.chexpert` departs from a phrase (its module docstring says why), `WORDING` gives the wording tested
instead.
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from medvl.evaluate.chexpert import CHEXPERT
from medvl.evaluate.labeler import label_mentions, label_report

P, N, U = "positive", "negative", "uncertain"

CHEXPERT_PHRASES: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "collapse"),
    "Cardiomegaly": (
        "cardiomegaly",
        "the heart",
        "heart size",
        "cardiac enlargement",
        "cardiac size",
        "cardiac shadow",
        "cardiac contour",
        "cardiac silhouette",
        "enlarged heart",
    ),
    "Consolidation": ("consolidation",),
    "Edema": (
        "edema",
        "heart failure",
        "chf",
        "vascular congestion",
        "pulmonary congestion",
        "indistinctness",
        "vascular prominence",
    ),
    "Enlarged Cardiomediastinum": (
        "mediastinum",
        "cardiomediastinum",
        "contour",
        "mediastinal configuration",
        "mediastinal silhouette",
        "pericardial silhouette",
        "cardiac silhouette and vascularity",
    ),
    "Fracture": ("fracture",),
    "Lung Lesion": (
        "mass",
        "nodular density",
        "nodular densities",
        "nodular opacity",
        "nodular opacities",
        "nodular opacification",
        "nodule",
        "lump",
        "cavitary lesion",
        "carcinoma",
        "neoplasm",
        "tumor",
    ),
    "Lung Opacity": (
        "opacity",
        "decreased translucency",
        "increased density",
        "airspace disease",
        "air-space disease",
        "air space disease",
        "infiltrate",
        "infiltration",
        "interstitial marking",
        "interstitial pattern",
        "interstitial lung",
        "reticular pattern",
        "reticular marking",
        "reticulation",
        "parenchymal scarring",
        "peribronchial thickening",
        "wall thickening",
        "scar",
    ),
    "Pleural Effusion": ("pleural fluid", "effusion"),
    "Pleural Other": (
        "pleural thickening",
        "fibrosis",
        "fibrothorax",
        "pleural scar",
        "pleural parenchymal scar",
        "pleuro-parenchymal scar",
        "pleuro-pericardial scar",
    ),
    "Pneumonia": ("pneumonia", "infection", "infectious process", "infectious"),
    "Pneumothorax": ("pneumothorax", "pneumothoraces"),
    "Support Devices": (
        "pacer",
        "line",
        "lines",
        "picc",
        "tube",
        "valve",
        "catheter",
        "pacemaker",
        "hardware",
        "arthroplasty",
        "marker",
        "icd",
        "defibrillator",
        "device",
        "drain",
        "plate",
        "screw",
        "cannula",
        "apparatus",
        "coil",
        "support",
        "equipment",
        "mediport",
    ),
}
# (positive sentence, negative sentence) where medvl reads a phrase only in context (see the chexpert docstring).
_ENLARGED = ("The {p} is enlarged.", "No enlargement of the {p}.")
WORDING: dict[tuple[str, str], tuple[str, str]] = {
    # Anatomical nouns are mentions together with what is said of them, not on their own.
    **{
        ("Cardiomegaly", p): _ENLARGED
        for p in ("the heart", "heart size", "cardiac size", "cardiac shadow", "cardiac contour", "cardiac silhouette")
    },
    **{
        ("Enlarged Cardiomediastinum", p): _ENLARGED
        for p in (
            "mediastinum",
            "cardiomediastinum",
            "mediastinal configuration",
            "mediastinal silhouette",
            "pericardial silhouette",
        )
    },
    # A bare "contour" is any contour (diaphragm, spine); "cardiac silhouette" belongs to Cardiomegaly.
    ("Enlarged Cardiomediastinum", "contour"): (
        "The mediastinal contour is widened.",
        "No widening of the mediastinal contour.",
    ),
    ("Enlarged Cardiomediastinum", "cardiac silhouette and vascularity"): (
        "The cardiomediastinal silhouette is enlarged.",
        "No enlargement of the cardiomediastinal silhouette.",
    ),
    # "Collapse" of a vertebral body is not atelectasis.
    ("Atelectasis", "collapse"): ("There is collapse of the left lower lobe.", "No lobar collapse."),
    ("Lung Opacity", "interstitial lung"): ("There is interstitial lung disease.", "No interstitial lung disease."),
    # "Support" alone is mostly the verb ("findings support pneumonia").
    ("Support Devices", "support"): ("There is a support device.", "No support device."),
}
WEAK = {"vascular congestion", "pulmonary congestion", "indistinctness", "vascular prominence"}  # CheXpert: uncertain
CASES = [(obs, phrase) for obs, phrases in CHEXPERT_PHRASES.items() for phrase in phrases]


@pytest.mark.parametrize(("observation", "phrase"), CASES, ids=[f"{o}:{p}" for o, p in CASES])
def test_every_chexpert_mention_phrase(observation: str, phrase: str) -> None:
    positive, negative = WORDING.get((observation, phrase), ("There is {p}.", "No {p}."))
    positive, negative = (s.format(p=phrase.removeprefix("the ")) for s in (positive, negative))
    expected = U if phrase in WEAK else P
    assert label_report(positive, CHEXPERT)[observation] == expected, (positive, label_mentions(positive, CHEXPERT))
    assert label_report(negative, CHEXPERT)[observation] == N, (negative, label_mentions(negative, CHEXPERT))


# The example sentences of issue 15, with the value CheXpert's rules give them.
ISSUE_15 = [
    # 1. enlargement in other words
    ("Heart size remains slightly large.", "Cardiomegaly", P),
    ("There is a marked interval increase in heart size.", "Cardiomegaly", P),
    ("Heart size is at the upper limits of normal or mildly enlarged.", "Cardiomegaly", U),
    ("No interval increase in heart size.", "Cardiomegaly", N),
    # 2. valves and hardware are support devices
    ("Prosthetic pulmonic valve unchanged.", "Support Devices", P),
    ("Orthopedic hardware in the right shoulder.", "Support Devices", P),
    ("Plate-like atelectasis at the left base.", "Support Devices", None),
    # 3. hedges and hypotheticals
    ("Upper lobe airspace disease or pulmonary nodule is not entirely excluded.", "Lung Opacity", U),
    ("Upper lobe airspace disease or pulmonary nodule is not entirely excluded.", "Lung Lesion", U),
    ("If there is concern for an occult fracture, consider a rib series.", "Fracture", U),
    ("Atelectasis or scarring at the left base.", "Atelectasis", U),
    # 4. negation over a list that ends in a purpose clause
    ("No effusion, pneumothorax or airspace opacity to suggest pneumonia.", "Pneumonia", N),
    ("No effusion, pneumothorax or airspace opacity to suggest pneumonia.", "Lung Opacity", N),
    # 5. an explicit negation beats a weaker related mention in the same sentence
    ("Stable cardiomegaly with vascular prominence without overt edema.", "Edema", N),
    ("Stable cardiomegaly with vascular prominence without overt edema.", "Cardiomegaly", P),
    ("Pulmonary vascular congestion. No pulmonary edema.", "Edema", U),  # other sentence: CheXpert's U > N
    # 6. what CheXpert counts as a mention
    ("The costophrenic angles are blunted.", "Pleural Effusion", None),
    ("The costophrenic angles are blunted.", "No Finding", None),  # blunting is some abnormality
    ("Masslike opacification of the right apex.", "Lung Lesion", P),
    ("Masslike opacification of the right apex.", "Lung Opacity", P),
    ("Calcified nodule in the right upper lobe.", "Lung Lesion", None),  # CheXpert's unmention
    # 7. CheXpert's pre- and post-negation uncertainty rules
    ("No new consolidation.", "Consolidation", U),
    ("No new consolidation.", "No Finding", None),
    ("Mild pulmonary vascular congestion.", "Edema", U),
    ("Heart size is stable.", "Cardiomegaly", U),
    ("Stable cardiomediastinal silhouette.", "Enlarged Cardiomediastinum", U),
    ("Heart size is stable and normal.", "Cardiomegaly", N),
    # scope: pseudo-negations, history, terminations
    ("There is not only an effusion but also atelectasis.", "Pleural Effusion", P),
    ("No interval change in the small left effusion.", "Pleural Effusion", P),
    ("History of pneumonia.", "Pneumonia", N),
    ("No pneumothorax, however there is a small effusion.", "Pleural Effusion", P),
]


@pytest.mark.parametrize(
    ("text", "observation", "expected"), ISSUE_15, ids=[f"{o}={e}:{t[:50]}" for t, o, e in ISSUE_15]
)
def test_issue_15_sentences(text: str, observation: str, expected: str | None) -> None:
    assert label_report(text, CHEXPERT)[observation] == expected, label_mentions(text, CHEXPERT)


def test_label_mentions_explains_the_labels() -> None:
    mentions = label_mentions("Stable cardiomegaly with vascular prominence without overt edema.", CHEXPERT)
    edema = [(m.text, m.label, m.weak) for m in mentions if m.name == "Edema"]
    assert edema == [("vascular prominence", U, True), ("edema", N, False)]
    assert {m.sentence_index for m in label_mentions("No effusion. Small pneumothorax.", CHEXPERT)} == {0, 1}


def test_each_distinct_sentence_is_read_once() -> None:
    fresh = dataclasses.replace(CHEXPERT)  # a copy with its own, empty sentence memo
    text = "No pleural effusion. Small right pneumothorax. No pleural effusion."
    first = label_mentions(text, fresh)
    assert [(m.name, m.label, m.sentence_index) for m in first] == [
        ("Pleural Effusion", N, 0),
        ("Pneumothorax", P, 1),
        ("Pleural Effusion", N, 2),
    ]
    assert fresh.sentence_mentions.cache_info().hits == 1  # the third sentence is the first one again
    assert label_mentions(text, fresh) == first
    assert label_report(text, fresh) == label_report(text, CHEXPERT)


def test_a_label_set_pickles_after_use() -> None:
    label_report("No pleural effusion.", CHEXPERT)  # the memo now holds a sentence
    copy = pickle.loads(pickle.dumps(CHEXPERT))
    assert copy.sentence_mentions("no pleural effusion.")[0].label == N
