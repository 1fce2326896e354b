"""Agreement of report labelers with radiology indexers' labels on real IU X-ray reports, in one run.

Reference: `../shared/data/iu_xray_reports/mesh_labels.jsonl` (2,365 train+val reports; NLM's indexers' MeSH
"Problems" terms mapped to 11 CheXpert observations and No Finding; see the data README). Labelers, all on the same
reports:

- medvl: `label_report(text, CHEXPERT)` (medvl.evaluate.chexpert: mentions, negation, uncertainty, CheXpert rules);
- keyword: a 15-line keyword matcher (one keyword list per observation), with and without a simple negation window
  (a negation word among the 5 words before the keyword, in the same sentence);
- medvl-mesh: `label_report(text, CHEXPERT_MESH)`, the option that reads reports as MeSH's indexers do where they
  and CheXpert's rules disagree ("X or Y" names both as present; scars and interstitial markings are not Lung
  Opacity): it measures how much of the gap to MeSH is CheXpert's definitions rather than reading errors;
- medspaCy ConText: medvl's own mention patterns as medspaCy target rules, medspaCy's default ConText rules for
  negation, uncertainty, hypothetical and historical mentions, CheXpert's aggregation. Same mentions, other context
  engine: it measures ConText against medvl's context rules. Needs `medspacy` importable (run this script with an
  interpreter that has it, e.g. `python3 -m venv /work/venv-medspacy && /work/venv-medspacy/bin/pip install
  medspacy`); otherwise that column says why it is missing.

Scores are printed for all reports and for two parts of them: "development" (the ids of R2Gen's train split, in
`annotation.json`; the only part whose errors were studied to write rules) and "check" (R2Gen's val split, held out
from that study). Per part: per-observation precision/recall/F1 with support, micro-F1 over the 11 observations
with "uncertain" counted negative (MeSH codes what is present, not what is hedged) and counted positive, reports/s
of each labeler; then, on the development part only, the kinds of disagreement of medvl with MeSH: each false
positive and false negative gets a named kind (`_KINDS`: "X or Y", scars as Lung Opacity, external leads, ...)
where CheXpert's rules and the indexers' coding part ways on purpose, or a generic one ("positive mention", "no
CheXpert mention", "negated in the report") that a reader sorts into medvl's errors and the indexers'. MeSH coding
is a proxy: where it and CheXpert's rules disagree, medvl's default follows CheXpert.
Exits 0 with a message when the data is absent.

    PYTHONPATH=. .venv/bin/python benchmarks/labeler_agreement.py [--examples 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

MESH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iu_xray_reports" / "mesh_labels.jsonl"
# R2Gen's split of the same reports: rules are studied on the train part only, the val part checks that they carry.
SPLITS = MESH.with_name("annotation.json")
PARTS = {"development": "train", "check": "val"}
OBSERVATIONS = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Atelectasis",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Pneumothorax",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "Support Devices",
)
P, N, U = "positive", "negative", "uncertain"
Labels = dict[str, str | None]

# ------------------------------------------------------------------------------------------- keyword baseline
KEYWORDS = {
    "Cardiomegaly": r"cardiomegaly|enlarged heart|heart is enlarged|cardiac enlargement",
    "Pleural Effusion": r"pleural effusion|effusions?\b",
    "Atelectasis": r"atelecta",
    "Edema": r"edema",
    "Consolidation": r"consolidat",
    "Pneumonia": r"pneumonia",
    "Pneumothorax": r"pneumothora",
    "Fracture": r"fracture",
    "Lung Lesion": r"nodule|\bmass",
    "Lung Opacity": r"opacit|infiltrat|airspace disease",
    "Support Devices": r"pacemaker|catheter|\btube\b|picc|\bport\b|\bline\b|defibrillator",
}
_NEG_WINDOW = re.compile(r"\b(?:no|not|without|negative for|free of|clear of)\b(?:\W+\w+){0,5}?\W*$")


def keyword_labeler(negation: bool) -> Callable[[str], Labels]:
    patterns = {name: re.compile(p) for name, p in KEYWORDS.items()}

    def label(text: str) -> Labels:
        out: Labels = dict.fromkeys(OBSERVATIONS)
        for sentence in re.split(r"(?<=\.)\s+", text.lower()):
            for name, pattern in patterns.items():
                for m in pattern.finditer(sentence):
                    negated = negation and _NEG_WINDOW.search(sentence[: m.start()]) is not None
                    out[name] = P if out[name] == P or not negated else N
        out["No Finding"] = None if any(out[n] == P for n in OBSERVATIONS if n != "Support Devices") else P
        return out

    return label


# ------------------------------------------------------------------------------------------- medspaCy ConText
def medspacy_labeler() -> tuple[Callable[[str], Labels] | None, str]:
    """medvl's CheXpert mention patterns in medspaCy's TargetMatcher, medspaCy's ConText for the context."""
    try:
        import medspacy
        from medspacy.ner import TargetRule
    except ImportError as exc:
        return None, f"medspaCy not importable in {sys.executable} ({exc})"
    try:
        from loguru import logger

        logger.remove()  # PyRuSH logs every token at DEBUG level
    except ImportError:
        pass
    from medvl.evaluate.chexpert import CHEXPERT
    from medvl.evaluate.labeler import _RANK

    nlp = medspacy.load()
    patterns = {**CHEXPERT.mentions, **CHEXPERT.extra_mentions}
    nlp.get_pipe("medspacy_target_matcher").add(
        [TargetRule(name, name, pattern=pattern) for name, pattern in patterns.items()]
    )

    def label(text: str) -> Labels:
        labels: Labels = dict.fromkeys(patterns)
        doc = nlp(re.sub(r"\bx{2,}\b", " ", text.lower()))
        for ent in doc.ents:
            found = N if ent._.is_negated else U if ent._.is_uncertain or ent._.is_hypothetical else P
            if _RANK[found] > _RANK[labels[ent.label_]]:
                labels[ent.label_] = found
        CHEXPERT.finalize(labels)
        return labels

    return label, f"medspaCy {medspacy.__version__} ConText (default rules) on medvl's mention patterns"


# ------------------------------------------------------------------------------------------- scoring
def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score(
    truth: Sequence[dict[str, int]], labels: Sequence[Labels], uncertain_as: int, names: Sequence[str] = OBSERVATIONS
) -> dict[str, tuple[float, float, float, int]]:
    """{name: (P, R, F1, support)} plus "micro" over `names`."""
    out = {}
    total = [0, 0, 0]
    for name in names:
        tp = fp = fn = 0
        for t, lab in zip(truth, labels, strict=True):
            pred = 1 if lab.get(name) == P or (lab.get(name) == U and uncertain_as) else 0
            tp += pred and t[name]
            fp += pred and not t[name]
            fn += t[name] and not pred
        out[name] = (*prf(tp, fp, fn), tp + fn)
        total = [total[0] + tp, total[1] + fp, total[2] + fn]
    out["micro"] = (*prf(*total), total[0] + total[2])
    return out


def run(label: Callable[[str], Labels], texts: Sequence[str]) -> tuple[list[Labels], float]:
    t0 = time.perf_counter()
    labels = [label(t) for t in texts]
    return labels, len(texts) / (time.perf_counter() - t0)


# Kinds of disagreement with the indexers, each a reading CheXpert's rules make on purpose (first match wins):
# (side, observation or None for any, pattern on the evidence: the medvl mention's sentence for a false negative read
# as uncertain or negative, the positive mention's text for a false positive, the report for a missed mention).
_KINDS: tuple[tuple[str, str, str | None, re.Pattern[str]], ...] = tuple(
    (kind, side, obs, re.compile(pattern))
    for kind, side, obs, pattern in (
        (
            "alternatives: 'X or Y', 'X versus Y', 'and/or' (CheXpert: uncertain; indexers code both)",
            "fn-u",
            None,
            r"\bor\b|\bversus\b|\bvs\b|and/or|\w/\w",
        ),
        (
            "borderline heart size, stable heart (CheXpert: uncertain)",
            "fn-u",
            "Cardiomegaly",
            r"borderline|upper limits|\bstable\b|\bunchanged\b",
        ),
        ("vascular congestion / prominence (CheXpert: uncertain Edema)", "fn-u", "Edema", r"congestion|prominence"),
        ("not well seen / demonstrated (CheXpert: uncertain)", "fn-u", None, r"\bnot\s+(?:well|clearly)\b"),
        ("hedge word: probable, may, possible, cannot exclude, favor, ... (CheXpert: uncertain)", "fn-u", None, r"."),
        ("calcified nodule (CheXpert's unmention list)", "fn-none", "Lung Lesion", r"calcified\s+nodul"),
        (
            "nodular wording outside CheXpert's lesion list (fibronodular, nodular prominence, ...)",
            "fn-none",
            "Lung Lesion",
            r"nodul",
        ),
        (
            "external monitor leads, occluders, stimulators (not in CheXpert's device list)",
            "fn-none",
            "Support Devices",
            r"\bleads?\b|occluder|stimulator",
        ),
        ("scar / scarring is Lung Opacity (CheXpert's list; indexers: Cicatrix)", "fp", "Lung Opacity", r"scar"),
        (
            "interstitial markings are Lung Opacity (CheXpert's list; indexers: Markings)",
            "fp",
            "Lung Opacity",
            r"interstitial",
        ),
        (
            "nodular opacity / density is Lung Lesion (CheXpert's list; indexers: Density, Opacity)",
            "fp",
            "Lung Lesion",
            r"nodular",
        ),
        (
            "enlarged cardiac silhouette is Cardiomegaly (indexers: Cardiac Shadow)",
            "fp",
            "Cardiomegaly",
            r"silhouette|contour",
        ),
        (
            "marker, valve, plate, screw, arthroplasty, prosthesis are devices (indexers: Surgical Instruments, ...)",
            "fp",
            "Support Devices",
            r"marker|valve|plate|screw|arthroplast|prosthe|hardware",
        ),
        ("'lines' in 'low lung lines' matches CheXpert's device phrase", "fp", "Support Devices", r"lines?"),
        ("hydropneumothorax contains CheXpert's 'pneumothorax'", "fp", "Pneumothorax", r"hydropneumo"),
        ("heart failure / CHF is an Edema mention (CheXpert's list)", "fp", "Edema", r"heart failure|chf"),
        ("infection / infectious is Pneumonia (CheXpert's list)", "fp", "Pneumonia", r"infect"),
    )
)


# Kinds that are slips of a phrase matcher rather than CheXpert's definitions: counted, with the generic kinds, as
# medvl's own errors when the ceiling below is computed (generously: some generic ones are the indexers' slips).
_SLIPS = ("'lines' in 'low lung lines'", "hydropneumothorax")
_GENERIC = ("other hedge", "no CheXpert mention", "negated in the report", "positive mention")


def _own_error(kind: str) -> bool:
    """True for a disagreement kind that is not a CheXpert rule the indexers do not share."""
    return kind.split(" ", 1)[1].startswith(_SLIPS) or kind.split(" ", 1)[1] in _GENERIC


def _disagreement_kind(name: str, side: str, evidence: str) -> str:
    for kind, kind_side, obs, pattern in _KINDS:
        if kind_side == side and obs in (None, name) and pattern.search(evidence):
            return kind
    return {
        "fn-u": "other hedge",
        "fn-none": "no CheXpert mention",
        "fn-n": "negated in the report",
        "fp": "positive mention",
    }[side]


def disagreements(records: list[dict], labels: list[Labels], examples: int) -> dict[str, dict]:
    """Kinds of disagreement of medvl with MeSH, by observation: each false positive and false negative (uncertain
    counted negative) gets the first kind of `_KINDS` whose pattern its evidence matches, or a generic one."""
    from medvl.evaluate.chexpert import CHEXPERT
    from medvl.evaluate.labeler import label_mentions

    print(
        f"\nKinds of disagreement, medvl vs MeSH on the {len(records)} development reports (uncertain counted "
        "negative):"
    )
    out: dict[str, dict] = {}
    totals: Counter[str] = Counter()
    true_positives = 0
    for name in OBSERVATIONS:
        by_kind: Counter[str] = Counter()
        shown: dict[str, list[str]] = defaultdict(list)
        for rec, lab in zip(records, labels, strict=True):
            pred, true = lab.get(name) == P, rec["labels"][name]
            true_positives += pred and bool(true)
            if pred == bool(true):
                continue
            mentions = [m for m in label_mentions(rec["report"], CHEXPERT) if m.name == name]
            label = lab.get(name)
            if pred:
                side, found = "fp", [m for m in mentions if m.label == P]
                evidence = "; ".join(sorted({re.sub(r"\s+", " ", m.text) for m in found}))
            elif label is None:
                side, found, evidence = "fn-none", [], rec["report"].lower()
            else:
                side = "fn-u" if label == U else "fn-n"
                found = [m for m in mentions if m.label == label]
                evidence = found[0].sentence if found else ""
            kind = ("FP " if pred else "FN ") + _disagreement_kind(name, side, evidence)
            by_kind[kind] += 1
            shown[kind].append(found[0].sentence if found else rec["report"][:120])
        out[name] = dict(by_kind)
        totals.update(by_kind)
        if by_kind:
            print(f"  {name}: {sum(by_kind.values())}")
            for kind, count in by_kind.most_common():
                print(f"    x{count:<3} {kind}, e.g. {shown[kind][:examples]}")
    print("  all observations, by kind:")
    for kind, count in totals.most_common():
        print(f"    x{count:<3} {kind}")
    out["ceiling"] = ceiling(true_positives, totals)
    c = out["ceiling"]
    print(
        f"  of {c['errors']} disagreements, {c['rule_kinds']} are kinds where CheXpert's rules and the indexers part "
        f"ways; were all {c['errors'] - c['rule_kinds']} others fixed, micro-F1 here would be {c['micro_f1']:.3f} "
        f"(now {c['micro_f1_now']:.3f}): the most a labeler that keeps CheXpert's rules can reach against MeSH"
    )
    return out


def ceiling(true_positives: int, kinds: Counter[str]) -> dict[str, float]:
    """Micro-F1 if every disagreement not of a CheXpert-rule kind (`_own_error`) were fixed: the upper bound of a
    labeler that follows CheXpert's rules, measured against the indexers. F1 = 2 TP / (2 TP + FP + FN)."""
    fp = sum(n for k, n in kinds.items() if k.startswith("FP "))
    fn = sum(n for k, n in kinds.items() if k.startswith("FN "))
    fixable_fp = sum(n for k, n in kinds.items() if k.startswith("FP ") and _own_error(k))
    fixable_fn = sum(n for k, n in kinds.items() if k.startswith("FN ") and _own_error(k))
    tp_best = true_positives + fixable_fn
    return {
        "errors": fp + fn,
        "rule_kinds": fp + fn - fixable_fp - fixable_fn,
        "micro_f1_now": 2 * true_positives / (2 * true_positives + fp + fn),
        "micro_f1": 2 * tp_best / (2 * tp_best + fp - fixable_fp + fn - fixable_fn),
    }


def parts(records: Sequence[dict]) -> dict[str, list[int]]:
    """Record indices of each part: "all", "development" (R2Gen train ids) and "check" (R2Gen val ids)."""
    out = {"all": list(range(len(records)))}
    if not SPLITS.is_file():
        return out
    split = json.loads(SPLITS.read_text())
    for part, key in PARTS.items():
        ids = {a["id"] for a in split[key]}
        out[part] = [i for i, r in enumerate(records) if r["id"] in ids]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1, help="example sentences per kind of disagreement")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    parser.add_argument("--no-medspacy", action="store_true", help="skip the medspaCy ConText column")
    args = parser.parse_args()
    if not MESH.is_file():
        print(f"skipped: {MESH} is not present (../shared/data holds the real-data files)")
        return
    from medvl.evaluate.chexpert import CHEXPERT, CHEXPERT_MESH
    from medvl.evaluate.labeler import label_report

    records = [json.loads(line) for line in MESH.read_text().splitlines() if line.strip()]
    texts = [r["report"] for r in records]
    truth = [r["labels"] for r in records]
    labelers: dict[str, Callable[[str], Labels] | None] = {
        "medvl": lambda t: label_report(t, CHEXPERT),
        "keyword+negation": keyword_labeler(True),
        "keyword": keyword_labeler(False),
        "medvl-mesh": lambda t: label_report(t, CHEXPERT_MESH),
    }
    notes = {}
    if args.no_medspacy:
        notes["medspacy-context"] = "skipped (--no-medspacy)"
    else:
        fn, note = medspacy_labeler()
        labelers["medspacy-context"] = fn
        notes["medspacy-context"] = note
    results: dict[str, dict] = {}
    outputs: dict[str, list[Labels]] = {}
    rates: dict[str, float] = {}
    for name, fn in labelers.items():
        if fn is not None:
            outputs[name], rates[name] = run(fn, texts)
    index = parts(records)
    print(f"{len(records)} reports of {MESH}; parts: " + ", ".join(f"{part} {len(ids)}" for part, ids in index.items()))
    for name, note in notes.items():
        print(f"{name}: {note}")
    print(
        "medvl-mesh: CHEXPERT_MESH, the MeSH indexers' reading: 'X or Y' names both as present, scars and "
        "interstitial markings are not Lung Opacity (medvl.evaluate.chexpert says why)"
    )
    for part, ids in index.items():
        results[part] = report_part(
            part, [truth[i] for i in ids], {n: [out[i] for i in ids] for n, out in outputs.items()}, rates
        )
    dev = index.get("development", index["all"])
    kinds = disagreements([records[i] for i in dev], [outputs["medvl"][i] for i in dev], args.examples)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"n_reports": len(records), "notes": notes, "results": results, "disagreements": kinds}, indent=1
            )
        )


def report_part(
    part: str, truth: list[dict[str, int]], outputs: dict[str, list[Labels]], rates: dict[str, float]
) -> dict[str, dict]:
    """Print and return the scores of every labeler on one part of the reports."""
    results: dict[str, dict] = {
        name: {
            "reports_per_s": rates[name],
            "uncertain_negative": score(truth, labels, 0),
            "uncertain_positive": score(truth, labels, 1),
        }
        for name, labels in outputs.items()
    }
    print(f"\n=== {part}: {len(truth)} reports ===")
    names = list(results)
    print("micro-F1 over the 11 observations (P / R / F1)")
    print(f"{'labeler':<20}{'uncertain -> negative':>28}{'uncertain -> positive':>28}{'reports/s':>12}")
    for name in names:
        un, up = results[name]["uncertain_negative"]["micro"], results[name]["uncertain_positive"]["micro"]
        print(
            f"{name:<20}{un[0]:>10.3f}{un[1]:>8.3f}{un[2]:>8.3f}  {up[0]:>10.3f}{up[1]:>8.3f}{up[2]:>8.3f}"
            f"{results[name]['reports_per_s']:>12,.0f}"
        )
    print("\nper observation, uncertain -> negative: F1 (P / R)")
    print(f"{'observation':<18}{'support':>8}" + "".join(f"{n:>26}" for n in names))
    for obs in OBSERVATIONS:
        support = results[names[0]]["uncertain_negative"][obs][3]
        cells = "".join(
            "%26s" % ("%.3f (%.2f / %.2f)" % (f1, p, r))
            for n in names
            for p, r, f1, _ in [results[n]["uncertain_negative"][obs]]
        )
        print(f"{obs:<18}{support:>8}{cells}")
    no_finding = {n: score(truth, outputs[n], 0, ["No Finding"])["No Finding"] for n in names}
    cells = "".join("%26s" % ("%.3f (%.2f / %.2f)" % (f1, p, r)) for p, r, f1, _ in no_finding.values())
    print(f"{'No Finding':<18}{no_finding[names[0]][3]:>8}{cells}   (not in the micro average)")
    for name in names:
        results[name]["no_finding"] = no_finding[name]
    base = results["keyword+negation"]["uncertain_negative"]
    for name in (n for n in ("medvl", "medvl-mesh") if n in results):
        ours = results[name]["uncertain_negative"]
        behind = [o for o in OBSERVATIONS if ours[o][3] >= 20 and ours[o][2] <= base[o][2]]
        print(
            f"{name} above keyword+negation in every observation with support >= 20: {not behind}"
            + (f" (not in {behind})" if behind else "")
        )
    return results


if __name__ == "__main__":
    main()
