"""What the BERT recipes (bert_pretrain, bert_classify, bert_qa) share: where the backbone and its
vocabulary come from (``--init``: a Hugging Face directory, a local keras-hub preset, an earlier
run, or nothing: a vocabulary learned from the data) and building it with those weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from zoo import registry
from zoo.errors import ConfigError

bert_model_config = registry.preset_config_for("text_encoder", "BERT")


def load_init(init: str) -> tuple[Any, list[str], list[Any], bool]:
    """(BertConfig, vocabulary, backbone weights, lowercase) from an --init spec."""
    import os

    if init.startswith("hf:"):
        from zoo.checkpoints import import_hf_bert

        backbone, pre = import_hf_bert(init[3:], sequence_length=8)
        return backbone.config, pre.vocabulary, backbone.get_weights(), pre.lowercase
    if init.startswith("keras_hub:"):
        from zoo.checkpoints import import_keras_hub_bert

        backbone, pre = import_keras_hub_bert(init[len("keras_hub:"):], sequence_length=8)
        return backbone.config, pre.vocabulary, backbone.get_weights(), pre.lowercase
    if os.path.isdir(init):
        from zoo.rundir import RunDir
        from zoo.tasks.masked_lm import MaskedLMInfo
        from zoo.tasks.question_answering import QuestionAnsweringInfo
        from zoo.tasks.text_classification import TextClassificationInfo

        run = RunDir.open(init)
        info = run.expect(MaskedLMInfo, TextClassificationInfo, QuestionAnsweringInfo, purpose="--init")
        backbone = getattr(run.load_model(), "backbone", None)
        if backbone is None:
            raise ConfigError(f"--init {init!r}: its model has no BERT backbone")
        cfg = dataclasses.replace(backbone.config, name=backbone.name)
        return cfg, run.vocabulary(), backbone.get_weights(), info.preprocessor.lowercase
    raise ConfigError(f"--init {init!r} is not hf:DIR, keras_hub:DIR or an existing run dir")


def resolve_backbone(cfg: Any, explicit: frozenset, corpus: Callable[[], list[str]],
                     prepared: Any = None) -> tuple[Any, Any, Any]:
    """The backbone config, the preprocessor and the initial weights of a BERT recipe run.

    With ``cfg.init`` they come from the checkpoint or run it names (``model.dropout`` still applies
    if the user set it); otherwise the vocabulary is learned from ``corpus()`` (at most
    ``data.vocab_sample_lines`` of it, a seeded sample). Returns
    ``(cfg with model and data.lowercase resolved, BertPreprocessor, initial weights or None)``.
    With ``prepared`` (a ``zoo.data.prepared.Prepared``) the vocabulary is the dataset's, and an
    ``--init`` whose vocabulary or casing differs is refused.
    """
    from zoo.tokenizers import BertPreprocessor, build_vocabulary

    d = cfg.data
    weights = None
    if cfg.init:
        model_cfg, vocab, weights, lowercase = load_init(cfg.init)
        if prepared is not None:
            from zoo.data.prepared import vocabulary_hash
            from zoo.errors import DataError

            if vocabulary_hash(vocab) != prepared.vocabulary_sha256 or lowercase != prepared.lowercase:
                raise DataError(f"{prepared.path!r} was prepared with a different vocabulary (sha256 "
                                f"{prepared.vocabulary_sha256[:12]}..., lowercase={prepared.lowercase}) than --init "
                                f"{cfg.init!r} has (sha256 {vocabulary_hash(vocab)[:12]}..., lowercase={lowercase}): "
                                f"prepare the corpus again with `zoo data prepare ... --init {cfg.init}`")
        if "model.dropout" in explicit:
            model_cfg = dataclasses.replace(model_cfg, dropout=cfg.model.dropout)
    elif prepared is not None:
        vocab, lowercase = list(prepared.vocabulary), prepared.lowercase
        model_cfg = dataclasses.replace(cfg.model, vocab_size=len(vocab))
    else:
        from zoo.data.text import vocabulary_sample

        sample = vocabulary_sample(corpus(), d.vocab_sample_lines, cfg.train.seed)
        vocab = build_vocabulary(sample, d.vocab_size, lowercase=d.lowercase)
        model_cfg, lowercase = dataclasses.replace(cfg.model, vocab_size=len(vocab)), d.lowercase
    if d.sequence_length > model_cfg.max_sequence_length:
        raise ConfigError(f"data.sequence_length={d.sequence_length} exceeds the model's "
                          f"max_sequence_length={model_cfg.max_sequence_length}")
    cfg = dataclasses.replace(cfg, model=model_cfg, data=dataclasses.replace(d, lowercase=lowercase))
    return cfg, BertPreprocessor(vocab, sequence_length=d.sequence_length, lowercase=lowercase), weights


def build_backbone(cfg: Any, weights: list[Any] | None) -> Any:
    """The run's BertBackbone, with the initial weights ``resolve_backbone`` loaded, if any."""
    from zoo.models.bert import build_bert

    backbone = build_bert(cfg.model)  # not via the registry: an imported checkpoint has its own name
    if weights is not None:
        backbone.set_weights(weights)
    return backbone
