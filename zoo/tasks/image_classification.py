"""Image classification: small_cnn and the ResNets on pixels (``image_classify``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zoo.rundir import RunInfo, SignatureTensor
from zoo.tasks import Task


@dataclass(frozen=True)
class ImageClassificationInfo(RunInfo):
    TASK: ClassVar[str] = "image_classification"
    input: SignatureTensor = SignatureTensor("images", "float32")
    class_names: tuple[str, ...] = ()


def classifier_summary(report: dict[str, Any]) -> str:
    """What `zoo export` says of any classifier's export above the table."""
    return f"keras accuracy {report['keras']['accuracy']:.4f} on {report['examples']} held-out examples"


TASK = Task(
    name=ImageClassificationInfo.TASK,
    description="images in, class probabilities out",
    info=ImageClassificationInfo,
    recipes={"image_classify": "zoo.recipes.image_classify"},
    exporter="zoo.export.exporter:ImageClassifierExporter",
    export_summary=classifier_summary,
)
