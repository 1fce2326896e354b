"""NLG metrics at parity with the COCO caption evaluation (pycocoevalcap run end to end, PTB tokenizer included),
METEOR's corpus aggregate, the pure-Python PTB tokenizer, and what happens without Java."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from medvl.evaluate.meteor import MeteorScorer, aggregate_stats, parse_stats
from medvl.evaluate.nlg import NLG_METRICS, SmallCorpusWarning, nlg_metrics, nlg_scores, pooled_bleu
from medvl.evaluate.ptb import JavaUnavailableError, java_missing_reason, ptb_tokenize

from .conftest import SHARED_DATA

needs_java = pytest.mark.skipif(java_missing_reason() is not None, reason=f"{java_missing_reason()}")
IU = SHARED_DATA / "iu_xray_reports" / "annotation.json"

TRICKY = [
    "Hello, world",
    "",
    "...",
    "Cannot exclude it; there's 3.5 cm (x) mass.",
    "½ “quoted” café naïve -- a/b 1,000",
    "e.g. the pt. has a 3x4 cm mass, i.e. large.",
    "Dr. Smith's note: don't worry.",
    "Heart size is normal. etc.",
    "AP view [portable] {test} 50% $100 #3 a+b a=b <5 mm> & so on",
    "cardiac  silhouette...   normal!!",
    "'quoted' text",
    "T5-T6, L1 vertebra.",
    "CT. No change since the pelvis CT.",
    "XXXX't contours are stable.",
    "The previously <br> described deformity.",
    "Line one\nline two\r\nline three",
    # emoji, zero-width and format characters, soft hyphens, underscores inside words, accents
    "Heart 😀 normal.",
    "lungs😀clear 👍🏽 ok 🫁 ❤️ fine",
    "heart\u200bsize normal",
    "a\u200b b \u200d\u2060\ufeffc",
    "cardio\u00admegaly noted",
    "soft\u00ad hyphen \u00adstart",
    "left_lung_base",
    "snake_case a_1 1_000 XXXX_XXXX",
    "_under trail_ a__b _ __",
    "e\u0301clair café naïve",
    "x² ① ½cm 3¼ «quoted» ab‐cd ‐ £5 ¢",
]


def _synthetic_reports(n: int, seed: int) -> list[str]:
    from medvl.data.synth import sample_study, write_report

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        out.append(write_report(sample_study(rng), rng))
    return out


# Generated reports with no token after PTB tokenization, and one empty reference: scored as pycocoevalcap does.
AWKWARD = [
    ("", ""),
    ("", "   "),
    ("", "..."),
    ("", " ! ? "),
    ("", "\n"),
    ("", "-- ; :"),
    ("", ""),
    ("", "Mild cardiomegaly."),
    ("   ", "The lungs are clear."),
]


def _corpus() -> tuple[list[str], list[str]]:
    """At least 500 (reference, generated) pairs: synthetic reports, plus real IU X-ray text when present, with
    empty, whitespace-only and punctuation-only generated reports (and references) mixed in."""
    refs, hyps = _synthetic_reports(300, 1), _synthetic_reports(300, 2)
    if IU.is_file():
        real = [r["report"] for split in json.loads(IU.read_text()).values() for r in split][:600]
        refs += real[:300]
        hyps += real[300:600]
    else:  # Without the real text, more synthetic pairs keep the corpus at 500+.
        refs += _synthetic_reports(250, 3)
        hyps += _synthetic_reports(250, 4)
    for k, (ref, hyp) in enumerate(AWKWARD):  # spread over the corpus, replacing one side of a pair
        i = 37 * k + 5
        refs[i] = ref or refs[i]
        hyps[i] = hyp
    return refs, hyps


def _pycocoevalcap(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """The COCO caption evaluation exactly as users run it: PTBTokenizer, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
        res = tokenizer.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
        bleu, _ = Bleu(4).compute_score(gts, res)
        meteor = Meteor()
        out = {f"bleu_{k + 1}": float(v) for k, v in enumerate(bleu)}
        out["meteor"] = float(meteor.compute_score(gts, res)[0])
        out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
        out["cider"] = float(Cider().compute_score(gts, res)[0])
    return out


@needs_java
def test_every_metric_matches_pycocoevalcap_end_to_end() -> None:
    refs, hyps = _corpus()
    assert len(refs) >= 500
    rows = np.random.default_rng(0).integers(0, len(refs), size=(20, len(refs)))
    with MeteorScorer() as meteor:
        ours = nlg_scores(refs, hyps, tokenizer="java", meteor=meteor, resamples=rows)
        # METEOR's corpus score of resamples, computed in numpy, equals the jar's own EVAL of those resamples.
        n_tokens = ptb_tokenize([*refs, *hyps], "java")[0]
        stats = meteor.segment_stats(n_tokens[: len(refs)], n_tokens[len(refs) :])
        jar = [meteor.corpus_scores([stats[i] for i in r])[1] for r in rows[:5].tolist()]
    reference = _pycocoevalcap(refs, hyps)
    assert ours.tokenizer == "ptb-java" and not ours.unavailable
    for key in NLG_METRICS:
        assert ours.scores[key] == pytest.approx(reference[key], abs=1e-4), key
        assert ours.scores[key] == pytest.approx(reference[key], abs=1e-12), key  # in fact identical
    np.testing.assert_allclose(aggregate_stats(parse_stats(stats), rows[:5]), jar, atol=1e-12)
    np.testing.assert_allclose(ours.resampled["meteor"][:5], jar, atol=1e-12)
    # The identity resample reproduces every corpus score.
    identity = np.arange(len(refs))[None]
    assert aggregate_stats(parse_stats(stats), identity)[0] == pytest.approx(ours.scores["meteor"], abs=1e-12)
    ident = nlg_scores(refs, hyps, tokenizer="java", meteor=False, resamples=identity)
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert ident.resampled[key][0] == pytest.approx(ours.scores[key], abs=1e-12), key
    assert 0.0 < ours.scores["bleu_4"] < ours.scores["bleu_1"] < 1.0 and ours.scores["cider"] > 0.0


@needs_java
def test_python_ptb_tokenizer_equals_the_java_one() -> None:
    texts = [*_synthetic_reports(400, 5), *TRICKY]
    if IU.is_file():
        texts += [r["report"] for split in json.loads(IU.read_text()).values() for r in split]
    java, used = ptb_tokenize(texts, "java")
    python, _ = ptb_tokenize(texts, "python")
    assert used == "java"
    differ = [(t, j, p) for t, j, p in zip(texts, java, python, strict=True) if j != p]
    assert not differ, differ[:3]
    assert (
        java[TRICKY.index("Cannot exclude it; there's 3.5 cm (x) mass.") + 400]
        == "can not exclude it there 's 3.5 cm -lrb- x -rrb- mass"
    )  # COCO's quirks, kept


def test_pooled_bleu_by_hand() -> None:
    # hypothesis "a b c d" vs reference "a b c e": 3/4 unigrams, 2/3 bigrams, 1/2 trigrams, 0/1 4-grams.
    stats = np.array([4, 4, 4, 3, 2, 1, 3, 2, 1, 0], dtype=float)
    bleu = pooled_bleu(stats)
    assert bleu[0] == pytest.approx(0.75) and bleu[1] == pytest.approx((0.75 * 2 / 3) ** 0.5)
    assert bleu[3] < 1e-3  # no 4-gram match: only the smoothing constant remains
    short = pooled_bleu(np.array([2, 4, 2, 1, 0, 0, 2, 1, 0, 0], dtype=float))
    assert short[0] == pytest.approx(np.exp(1 - 4 / 2))  # brevity penalty


def test_identical_empty_and_mismatched_reports() -> None:
    refs = _synthetic_reports(6, 7)
    same = nlg_metrics(refs, refs, tokenizer="python", meteor=False)
    assert same["bleu_4"] == pytest.approx(1.0, abs=1e-6) and same["rouge_l"] == pytest.approx(1.0)
    assert same["meteor"] is None
    hyps = _synthetic_reports(6, 8)
    good = nlg_metrics(refs, hyps, tokenizer="python", meteor=False)
    one_empty = nlg_metrics(refs, ["", *hyps[1:]], tokenizer="python", meteor=False)
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert one_empty[key] < good[key], key
    with pytest.warns(SmallCorpusWarning, match="CIDEr-D over 6 studies"):
        all_empty = nlg_metrics(refs, ["", " ", "...", "\n", "!", ""], tokenizer="python", meteor=False)
    assert all_empty["bleu_1"] < 1e-6 and all_empty["rouge_l"] == 0.0 and all_empty["cider"] == 0.0
    # An empty reference and an empty generated report: pycocoevalcap's ROUGE-L reads each as one empty token.
    assert nlg_metrics(["", refs[1]], ["", refs[1]], tokenizer="python", meteor=False)["rouge_l"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="6 references but 5 generated reports"):
        nlg_metrics(refs, hyps[:5], meteor=False)
    with pytest.raises(ValueError, match="no reports to score"):
        nlg_metrics([], [], meteor=False)
    with pytest.raises(TypeError, match="must be str"):
        nlg_metrics(refs[:2], ["text", None], meteor=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown PTB tokenizer backend 'ptb'"):
        ptb_tokenize(["x"], "ptb")


def test_without_java_meteor_is_unavailable_not_zero(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH
    assert "java" in java_missing_reason()
    result = nlg_scores(["The heart is normal."], ["The heart is enlarged."])
    assert result.scores["meteor"] is None and "java" in result.unavailable["meteor"]
    assert result.tokenizer == "ptb-python" and result.scores["bleu_1"] > 0
    with pytest.raises(JavaUnavailableError, match="java"):
        ptb_tokenize(["x"], "java")
    with pytest.raises(JavaUnavailableError):
        MeteorScorer()


# The example of issue 15: pycocoevalcap 1.2's own numbers for an empty generated report.
ISSUE_REFS, ISSUE_HYPS = ["The lungs are clear.", "Mild cardiomegaly."], ["", "Mild cardiomegaly."]
ISSUE_EXPECTED = {"bleu_1": 0.1353, "bleu_2": 0.1353, "bleu_4": 0.000135, "rouge_l": 0.5, "cider": 2.5}


@pytest.mark.parametrize("tokenizer", ["python", pytest.param("java", marks=needs_java)])
def test_empty_generated_report_scores_as_in_pycocoevalcap(tokenizer: str) -> None:
    with pytest.warns(SmallCorpusWarning):
        scores = nlg_scores(ISSUE_REFS, ISSUE_HYPS, tokenizer=tokenizer, meteor=False).scores
    for key, value in ISSUE_EXPECTED.items():
        assert scores[key] == pytest.approx(value, abs=1e-4 if value > 1e-3 else 1e-6), key
    # Whitespace-only and punctuation-only reports tokenize to nothing and score the same.
    for blank in ("   ", "...", " ; - ! "):
        with pytest.warns(SmallCorpusWarning):
            other = nlg_scores(ISSUE_REFS, [blank, ISSUE_HYPS[1]], tokenizer=tokenizer, meteor=False).scores
        assert other == scores


@needs_java
def test_empty_generated_report_meteor_as_in_pycocoevalcap() -> None:
    with pytest.warns(SmallCorpusWarning):
        result = nlg_scores(ISSUE_REFS, ISSUE_HYPS, tokenizer="java")
    assert result.scores["meteor"] == pytest.approx(0.4688, abs=1e-4)


def test_cider_over_one_study_is_unavailable_not_zero() -> None:
    result = nlg_scores(
        ["The lungs are clear."],
        ["The lungs are clear."],
        tokenizer="python",
        meteor=False,
        resamples=np.zeros((3, 1), dtype=int),
    )
    assert result.scores["cider"] is None and "one study" in result.unavailable["cider"]
    assert "log(1)" in result.unavailable["cider"] and "cider" not in result.per_study
    assert "cider" not in result.resampled and result.scores["bleu_1"] == pytest.approx(1.0)
    assert not result.warnings
    with pytest.warns(SmallCorpusWarning, match="fewer than 50"):
        small = nlg_scores(
            ["The lungs are clear.", "Mild cardiomegaly."],
            ["The lungs are clear.", ""],
            tokenizer="python",
            meteor=False,
        )
    assert small.scores["cider"] is not None and len(small.warnings) == 1


@needs_java
def test_python_ptb_tokenizer_equals_java_on_unicode_ranges() -> None:
    """Every character of the Latin-1, IPA, punctuation, symbol and variation-selector blocks, inside a word and
    between words, plus characters outside the Basic Multilingual Plane."""
    points = [
        *range(0xA0, 0x370),
        *range(0x2000, 0x2800),
        *range(0xFE00, 0xFE10),
        0xFEFF,
        0xFFFC,
        0xFFFD,
        *range(0x1F300, 0x1F320),
        *range(0x1F900, 0x1F910),
        0x1D400,
        0x10000,
        0x20000,
    ]
    texts = [f"ab{chr(c)}cd" for c in points] + [f"ab {chr(c)} cd" for c in points]
    java, _ = ptb_tokenize(texts, "java")
    python, _ = ptb_tokenize(texts, "python")
    differ = [(hex(ord(t[2] if t[2] != " " else t[3])), j, p) for t, j, p in zip(texts, java, python) if j != p]
    assert not differ, differ[:5]
    assert java[points.index(0x1F300)] == "ab cd" and java[points.index(0x00AD)] == "abcd"  # dropped; joined
