"""Extractive question answering (``bert_qa``): raw (question, context) strings in, a span of the context out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zoo.rundir import RunDir, RunInfo, WordPieceSpec
from zoo.tasks import Task


@dataclass(frozen=True)
class QuestionAnsweringInfo(RunInfo):
    """Span extraction from raw (question, context) strings (``bert_qa``): how features are cut and how the
    answer is chosen."""

    TASK: ClassVar[str] = "question_answering"
    preprocessor: WordPieceSpec = WordPieceSpec(RunDir.VOCAB, 384, True)
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    null_threshold: float | None = None  # set for SQuAD 2.0 data: answer "" when [CLS] wins by more
    backbone: str = ""
    init: str = ""


def _summary(report: dict[str, Any]) -> str:
    return f"{report['examples']} held-out questions; exact match and F1 (SQuAD, 0-100) against their answers"


TASK = Task(
    name=QuestionAnsweringInfo.TASK,
    description="a question and a passage (raw strings) in, the answer's span of the passage out",
    info=QuestionAnsweringInfo,
    recipes={"bert_qa": "zoo.recipes.bert_qa"},
    exporter="zoo.export.exporter:QuestionAnsweringExporter",
    serializable=("zoo.models.bert", "zoo.models.encoder", "zoo.models.fused"),
    export_summary=_summary,
    predictor="zoo.answerer:Answerer",
)
