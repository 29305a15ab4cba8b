"""Masked-language-model pretraining of BERT (``bert_pretrain``); its runs start the other BERT tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zoo.rundir import RunDir, RunInfo, WordPieceSpec
from zoo.tasks import Task


@dataclass(frozen=True)
class MaskedLMInfo(RunInfo):
    TASK: ClassVar[str] = "masked_lm"
    preprocessor: WordPieceSpec = WordPieceSpec(RunDir.VOCAB, 128, True)
    backbone: str = ""
    init: str = ""


TASK = Task(
    name=MaskedLMInfo.TASK,
    description="BERT pretraining (masked tokens); no export, its runs are --init for the other BERT recipes",
    info=MaskedLMInfo,
    recipes={"bert_pretrain": "zoo.recipes.bert_pretrain"},
    serializable=("zoo.models.bert", "zoo.models.encoder", "zoo.models.fused"),
)
