"""Text to text with an encoder-decoder Transformer (``translate``): strings in, generated strings out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from zoo.rundir import RunDir, RunInfo, Seq2SeqTextSpec, SignatureTensor
from zoo.tasks import Task


@dataclass(frozen=True)
class TranslationInfo(RunInfo):
    """A text-to-text model (translation, summarization...)."""

    TASK: ClassVar[str] = "translation"
    input: SignatureTensor = SignatureTensor("text", "string")
    output: SignatureTensor = SignatureTensor("translation", "string")
    preprocessor: Seq2SeqTextSpec = Seq2SeqTextSpec(RunDir.VOCAB, RunDir.VOCAB, 64, 64, False)
    decode: dict[str, Any] = field(default_factory=dict)


def _summary(report: dict[str, Any]) -> str:
    return f"{report['examples']} held-out sources, decoding: {report['decode']['method']}"


TASK = Task(
    name=TranslationInfo.TASK,
    description="a source string in, its translation out (greedy, beam or sampled decoding)",
    info=TranslationInfo,
    recipes={"translate": "zoo.recipes.translate"},
    exporter="zoo.export.exporter:TranslationExporter",
    serializable=("zoo.models.seq2seq",),
    export_summary=_summary,
    predictor="zoo.translator:Translator",
)
