"""Recipe: fine-tune a BERT text classifier on CSV / TSV / JSONL (single texts or text pairs).

    zoo train bert_classify --data train.tsv --eval-data dev.tsv --init hf:path/to/hf_bert_dir
    zoo train bert_classify --data train.csv --set model.preset=bert_mini          # from scratch
    zoo train bert_classify --data pairs.jsonl --set data.pair_column=hypothesis --init runs/<pretrain run>

``--init`` takes ``hf:DIR`` (a Hugging Face BERT directory), ``keras_hub:DIR`` (a local keras-hub
preset) or a run dir of ``bert_pretrain`` / ``bert_classify``; without it the model starts from
scratch with a WordPiece vocabulary learned from the training texts. Reports accuracy and macro-F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import registry
from zoo.metrics import macro_f1
from zoo.recipes.bert_setup import bert_model_config, build_backbone, resolve_backbone
from zoo.recipes.engine.cli import main_for
from zoo.recipes.engine.config import OptimizerConfig, ScheduleConfig, TrainConfig
from zoo.recipes.engine.run import Datasets, Recipe
from zoo.recipes.text_data import TextDataConfig, logits_and_labels, read_splits, text_classification_info
from zoo.rundir import RunDir
from zoo.tasks.text_classification import TextClassificationInfo


@dataclass(frozen=True)
class BertClassifyConfig:
    """Model (a BERT preset; replaced by the checkpoint's shape with --init), data and training."""

    model: Any = field(default_factory=lambda: registry.default_config("bert_tiny"),
                       metadata={"polymorphic": bert_model_config})
    init: str = ""
    classifier_dropout: float = 0.1
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=3, batch_size=32, optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, weight_decay=0.01),
        schedule=ScheduleConfig(name="linear", warmup_epochs=0.3)))


@dataclass(frozen=True)
class ClassifyState:
    """What prepare_data hands build_model and evaluate."""

    preprocessor: Any
    initial_weights: list[Any] | None  # the backbone's, from --init
    eval_batches: Any  # (inputs, label) batches of the eval split


def prepare_data(cfg: BertClassifyConfig, explicit: frozenset) -> tuple[BertClassifyConfig, Datasets]:
    import math

    d = cfg.data
    splits = read_splits(d, cfg.train.seed)
    cfg, pre, weights = resolve_backbone(cfg, explicit, splits.corpus)
    batch = cfg.train.batch_size
    state = ClassifyState(pre, weights, splits.eval_dataset(pre, batch))
    info = {"class_names": splits.class_names, "pair": splits.pair, "counts": splits.counts,
            "streamed": splits.streamed, **splits.bad_rows}
    return cfg, Datasets(
        train=splits.train_dataset(pre, batch, cfg.train.seed),
        steps_per_epoch=max(1, math.ceil(splits.counts["train"] / batch)),
        validation=splits.validation_dataset(pre, batch), test=None,
        eval_sample=splits.eval_sample(d.eval_sample_size), calibration=splits.calibration(d.calibration_size),
        info=info, files={RunDir.VOCAB: "\n".join(pre.vocabulary) + "\n"}, state=state,
        sharded_train=(lambda shard, size: splits.train_dataset(pre, size, cfg.train.seed, shard)) if splits.streamed
        else None)


def build_model(cfg: BertClassifyConfig, data: Datasets) -> Any:
    from zoo.models.bert import BertClassifier

    return BertClassifier(build_backbone(cfg, data.state.initial_weights), num_classes=len(data.info["class_names"]),
                          dropout=cfg.classifier_dropout, preprocessor=data.state.preprocessor,
                          name="bert_classifier")


def compile_args(cfg: BertClassifyConfig) -> dict[str, Any]:
    import keras

    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def evaluate(cfg: BertClassifyConfig, model: Any, data: Datasets) -> dict[str, float]:
    (logits,), y_eval = logits_and_labels([model], data.state.eval_batches)
    pred = logits.argmax(-1)
    return {"eval_accuracy": float((pred == y_eval).mean()),
            "eval_macro_f1": macro_f1(y_eval, pred, len(data.info["class_names"]))}


def run_info(cfg: BertClassifyConfig, data: Datasets) -> TextClassificationInfo:
    return text_classification_info(RECIPE.name, "bert_classifier", cfg, data, backbone=cfg.model.name, init=cfg.init)


FLAGS = {
    "--data": ("data.source", "training file: CSV, TSV (header row) or JSONL"),
    "--eval-data": ("data.eval_source", "evaluation file of the same kind"),
    "--init": ("init", "hf:DIR, keras_hub:DIR or a run dir to start from"),
}

RECIPE = Recipe(
    name="bert_classify",
    description="Fine-tune a BERT classifier on labelled texts or text pairs (CSV/TSV/JSONL).",
    config_class=BertClassifyConfig, prepare_data=prepare_data, build_model=build_model,
    compile_args=compile_args, run_info=run_info, evaluate=evaluate, flags=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
