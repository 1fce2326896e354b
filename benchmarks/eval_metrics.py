"""Time of the full metric suite on 590 report pairs: medvl next to pycocoevalcap, in the same run, same corpus.

medvl: `score_corpus` = PTB tokenization + BLEU-1..4 + METEOR + ROUGE-L + CIDEr-D, the CheXpert labeler on both
sides, clinical P/R/F1 (14 and 5 labels, micro/macro/example), and 1,000-resample bootstrap 95% intervals for every
headline metric. pycocoevalcap: its PTBTokenizer and the BLEU, METEOR, ROUGE-L and CIDEr scorers as its
COCOEvalCap runs them (no clinical metrics, no intervals). Also prints the labeler's throughput and checks that the
two agree on every NLG score.

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
import time
from pathlib import Path

import numpy as np

from medvl.evaluate.chexpert import CHEXPERT
from medvl.evaluate.labeler import label_report
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
    return [texts[i] for i in order[:n]], [texts[i] for i in order[n:2 * n]], source


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
        raise SystemExit(f"this benchmark compares METEOR and the PTB tokenizer, which need Java: "
                         f"{java_missing_reason()}")
    refs, hyps, source = corpus(args.pairs)
    if not args.no_awkward:
        for k, text in enumerate(AWKWARD):
            hyps[(97 * k + 11) % len(hyps)] = text
        source += f", {len(AWKWARD)} generated reports empty, whitespace or punctuation only"
    print(f"corpus: {len(refs)} pairs of {source}")

    t0 = time.perf_counter()
    ours = score_corpus(refs, hyps, bootstrap=args.bootstrap)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    peer = pycocoevalcap_suite(refs, hyps)
    t_peer = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_corpus(refs, hyps, bootstrap=0, meteor=False, tokenizer="python")
    t_light = time.perf_counter() - t0

    texts = refs + hyps
    t0 = time.perf_counter()
    for text in texts:
        label_report(text, CHEXPERT)
    rate = len(texts) / (time.perf_counter() - t0)

    print(f"\n{'suite':<72}{'seconds':>9}")
    print(f"{'medvl: all NLG + CheXpert CE (14/5 labels) + ' + str(args.bootstrap) + '-resample bootstrap CIs':<72}"
          f"{t_ours:>9.2f}")
    print(f"{'pycocoevalcap: PTB + BLEU + METEOR + ROUGE-L + CIDEr, no CE, no CIs':<72}{t_peer:>9.2f}")
    print(f"{'medvl, validation mode: Python PTB, no METEOR, no CIs (what training runs)':<72}{t_light:>9.2f}")
    print(f"\nCheXpert labeler: {rate:,.0f} reports/s ({len(texts)} reports, one core)")
    print(f"\n{'metric':<10}{'medvl':>10}{'pycocoevalcap':>15}{'|diff|':>10}   95% CI (medvl)")
    for key, value in peer.items():
        mine = ours.metrics[key]
        print(f"{key:<10}{mine:>10.4f}{value:>15.4f}{abs(mine - value):>10.1e}   "
              f"[{ours.metrics[key + '_ci_low']:.4f}, {ours.metrics[key + '_ci_high']:.4f}]")


if __name__ == "__main__":
    main()
