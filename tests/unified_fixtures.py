"""A tiny unified-family (BiomedGPT) model in memory, with random weights: for the tests of its task and of what
predict, serve and demo do with it. Its tokenizer is fitted on the session's synthetic studies plus one yes/no
question per study, so no training run is needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from medvl.config.experiment import ExperimentConfig
from medvl.data.config import DataConfig
from medvl.data.sources import load_studies
from medvl.data.study import Study
from medvl.data.tokenizer import train_bpe_tokenizer
from medvl.infer.predictor import LoadedModel
from medvl.models.unified.config import UnifiedConfig
from medvl.models.unified.model import UnifiedModel
from medvl.tasks.instructed_generation import InstructedGenerationOptions, InstructedGenerationTask
from medvl.train.config import TrainConfig

FINDING_QUESTIONS = {"Cardiomegaly": "is the heart enlarged?", "Pleural Effusion": "is there a pleural effusion?"}


def vqa_studies(studies: list[Study]) -> list[Study]:
    """One question per study about a finding it is labelled for, answered yes/no (closed)."""
    out = []
    for k, s in enumerate(studies):
        finding = list(FINDING_QUESTIONS)[k % 2]
        answer = "yes" if (s.labels or {}).get(finding) == 1 else "no"
        out.append(
            dataclasses.replace(
                s,
                id=f"q{k}_{s.id}",
                report="",
                labels=None,
                question=FINDING_QUESTIONS[finding],
                answer=answer,
                meta={"answer_type": "closed", "question_type": "presence"},
            )
        )
    return out


def unified_parts(synth_root: Path) -> tuple[list[Study], dict[str, Any]]:
    """12 report studies and 12 VQA studies of the synthetic set, and the task assets fitted on them."""
    splits = load_studies(DataConfig(source="iu_xray", root=str(synth_root)))
    train = splits["train"][:12]
    vqa = vqa_studies(splits["train"][12:24])
    studies = train + vqa
    tok = train_bpe_tokenizer(
        [t for s in studies for t in (s.report, s.question, s.answer) if t] + ["no finding"],
        vocab_size=300,
        min_frequency=1,
    )
    answers = sorted({s.answer for s in vqa} | {"maybe later", "left lower lobe"})
    class_names = sorted({n for s in train for n, v in (s.labels or {}).items() if v == 1}) + ["no finding"]
    return studies, {"tokenizer": tok, "answers": answers, "class_names": class_names, "multi_label": True}


def tiny_task(assets: dict[str, Any], **options: Any) -> InstructedGenerationTask:
    """The task around a tiny random unified model (seeded: the same weights every call); `options` set `task:`."""
    torch.manual_seed(0)
    mc = UnifiedConfig(
        image_size=32,
        resnet="resnet18",
        d_model=32,
        n_heads=4,
        ffn_dim=64,
        encoder_layers=1,
        decoder_layers=1,
        vocab_size=len(assets["tokenizer"]) + assets.get("n_codes", 0),  # MIM codes follow the text tokens
        pad_id=0,
        dropout=0.0,
    )
    cfg = ExperimentConfig(
        model_family="unified",
        model_size="tiny",
        model=mc,
        task=InstructedGenerationOptions(none_class="no finding", **options),
        train=TrainConfig(label_smoothing=0.1),
    )
    return InstructedGenerationTask(UnifiedModel(mc).eval(), assets, cfg)


def tiny_unified(assets: dict[str, Any], **options: Any) -> LoadedModel:
    """`tiny_task` as a loaded model, as `medvl.infer.predictor.load_trained` returns one (checkpoint "run")."""
    task = tiny_task(assets, **options)
    return LoadedModel(task.cfg, task.model, assets["tokenizer"], task, torch.device("cpu"), Path("run"), {})
