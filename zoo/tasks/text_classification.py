"""Text classification on raw strings: BERT classifiers (``bert_classify``) and distilled students."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zoo.rundir import RunDir, RunInfo, SignatureTensor, WordPieceSpec
from zoo.tasks import Task
from zoo.tasks.image_classification import classifier_summary


@dataclass(frozen=True)
class TextClassificationInfo(RunInfo):
    """A classifier on raw strings (``bert_classify``, a distilled student)."""

    TASK: ClassVar[str] = "text_classification"
    input: SignatureTensor = SignatureTensor("text", "string")
    preprocessor: WordPieceSpec = WordPieceSpec(RunDir.VOCAB, 128, True)
    class_names: tuple[str, ...] = ()
    backbone: str = ""
    init: str = ""
    teacher: str = ""


TASK = Task(
    name=TextClassificationInfo.TASK,
    description="raw strings (or string pairs) in, class probabilities out",
    info=TextClassificationInfo,
    recipes={"bert_classify": "zoo.recipes.bert_classify"},
    exporter="zoo.export.exporter:TextClassifierExporter",
    serializable=("zoo.models.bert", "zoo.models.encoder", "zoo.models.fused", "zoo.models.text_task",
                  "zoo.tokenizers"),
    export_summary=classifier_summary,
)
