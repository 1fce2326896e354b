"""Time of the full metric suite on 590 report pairs: medvl next to pycocoevalcap, in the same run, same corpus.

medvl: `score_corpus` = PTB tokenization + BLEU-1..4 + METEOR + ROUGE-L + CIDEr-D, the CheXpert labeler on both
sides, clinical P/R/F1 (14 and 5 labels, micro/macro/example), and 1,000-resample bootstrap 95% intervals for every
headline metric. pycocoevalcap: its PTBTokenizer and the BLEU, METEOR, ROUGE-L and CIDEr scorers as its
COCOEvalCap runs them (no clinical metrics, no intervals). Also prints the labeler's throughput, the CPU seconds of
each suite next to its wall seconds and the load average (the machine may be shared), the floor under both suites
(METEOR 1.5's JVM loading its paraphrase table until it scores one pair: medvl starts it first and does all its
other work meanwhile, so its wall time is this floor plus the METEOR round trips), and checks that the two agree on
every NLG score.

The corpus: real IU X-ray report text from ../shared/data/iu_xray_reports (each reference paired with another
study's report) when present, else synthetic reports; six generated reports are replaced by empty, whitespace-only
and punctuation-only text (`--no-awkward` keeps them), which both sides must score alike too.

    .venv/bin/python benchmarks/eval_metrics.py [--pairs 590] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medvl.evaluate.chexpert import CHEXPERT
from medvl.evaluate.labeler import label_report
from medvl.evaluate.meteor import MeteorScorer
from medvl.evaluate.ptb import java_missing_reason
from medvl.evaluate.scoring import score_corpus

IU = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iu_xray_reports" / "annotation.json"


def corpus(n: int) -> tuple[list[str], list[str], str]:
    if IU.is_file():
        texts = [r["report"] for split in json.loads(IU.read_text()).values() for r in split]
        source = f"IU X-ray report text ({IU})"
    else:
        from medvl.data.synth import sample_study, write_report

        texts = []
        for i in range(2 * n):
            rng = np.random.default_rng([0, i])
            texts.append(write_report(sample_study(rng), rng))
        source = "synthetic reports (../shared/data absent)"
    order = np.random.default_rng(0).permutation(len(texts))
    return [texts[i] for i in order[:n]], [texts[i] for i in order[n : 2 * n]], source


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Wall seconds and CPU seconds (this process and the child processes it waited for: the Java PTB tokenizer and
    METEOR) of the block, which is what a loaded machine changes least. Memoized sentence labels are cleared first,
    so every block labels its reports from scratch."""
    CHEXPERT.sentence_mentions.cache_clear()
    out: dict[str, float] = {}

    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    wall, start = time.perf_counter(), cpu()
    yield out
    out["wall"], out["cpu"] = time.perf_counter() - wall, cpu() - start


AWKWARD = ("", "   ", "...", "\n", " ! ? ", "-- ;")


def pycocoevalcap_suite(refs: list[str], hyps: list[str]) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
        res = tokenizer.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
        out = {f"bleu_{k + 1}": v for k, v in enumerate(Bleu(4).compute_score(gts, res)[0])}
        out["meteor"] = Meteor().compute_score(gts, res)[0]
        out["rouge_l"] = Rouge().compute_score(gts, res)[0]
        out["cider"] = Cider().compute_score(gts, res)[0]
    return {k: float(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=590)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--no-awkward", action="store_true", help="keep every generated report as drawn")
    args = parser.parse_args()
    if java_missing_reason():
        raise SystemExit(
            f"this benchmark compares METEOR and the PTB tokenizer, which need Java: {java_missing_reason()}"
        )
    refs, hyps, source = corpus(args.pairs)
    if not args.no_awkward:
        for k, text in enumerate(AWKWARD):
            hyps[(97 * k + 11) % len(hyps)] = text
        source += f", {len(AWKWARD)} generated reports empty, whitespace or punctuation only"
    print(f"corpus: {len(refs)} pairs of {source}")

    load_before = os.getloadavg()
    with timed() as t_ours:
        ours = score_corpus(refs, hyps, bootstrap=args.bootstrap)
    with timed() as t_peer:
        peer = pycocoevalcap_suite(refs, hyps)
    with timed() as t_light:
        score_corpus(refs, hyps, bootstrap=0, meteor=False, tokenizer="python")

    with timed() as t_meteor, MeteorScorer() as scorer:
        scorer.segment_stats(["the lungs are clear ."], ["the lungs are clear ."])

    texts = refs + hyps
    with timed() as t_label:
        for text in texts:
            label_report(text, CHEXPERT)
    load_after = os.getloadavg()

    print(f"\n{'suite':<72}{'seconds':>9}{'CPU s':>8}")
    for name, t in (
        (f"medvl: all NLG + CheXpert CE (14/5 labels) + {args.bootstrap}-resample bootstrap CIs", t_ours),
        ("pycocoevalcap: PTB + BLEU + METEOR + ROUGE-L + CIDEr, no CE, no CIs", t_peer),
        ("medvl, validation mode: Python PTB, no METEOR, no CIs (what training runs)", t_light),
        ("floor of both: METEOR 1.5 start (JVM + paraphrase table) to its first score", t_meteor),
    ):
        print(f"{name:<72}{t['wall']:>9.2f}{t['cpu']:>8.2f}")
    print(
        f"\nCheXpert labeler: {len(texts) / t_label['wall']:,.0f} reports/s ({len(texts)} reports, one core, "
        "none of their sentences read before)"
    )
    print(
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPUs; "
        "CPU s: this process and its Java children, user + system"
    )
    print(f"\n{'metric':<10}{'medvl':>10}{'pycocoevalcap':>15}{'|diff|':>10}   95% CI (medvl)")
    for key, value in peer.items():
        mine = ours.metrics[key]
        print(
            f"{key:<10}{mine:>10.4f}{value:>15.4f}{abs(mine - value):>10.1e}   "
            f"[{ours.metrics[key + '_ci_low']:.4f}, {ours.metrics[key + '_ci_high']:.4f}]"
        )


if __name__ == "__main__":
    main()
