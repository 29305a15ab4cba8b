"""Recipe: BERT masked-LM pretraining from plain text (one sentence or passage per line).

    zoo train bert_pretrain --data 'corpus/*.txt' --set model.preset=bert_tiny
    zoo train bert_pretrain --data corpus.txt --set data.whole_word_masking=true --init hf:path/to/bert
    zoo data prepare bert_pretrain --data 'corpus/*.txt' --out data/wiki    # packed TFRecord shards, once
    zoo train bert_pretrain --data data/wiki --set train.steps=100000

Dynamic masking (a fresh choice every epoch) of ``mask_rate`` of the tokens, of which 80% become
[MASK], 10% a random token and 10% stay unchanged (Devlin et al. 2019); optional whole-word
masking. Without ``--init`` a WordPiece vocabulary is learned from the corpus. AdamW with linear
warm-up and decay; the masked accuracy is reported. ``bert_classify --init runs/<this run>``
fine-tunes the result.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import registry
from zoo.config import check_choice, check_range
from zoo.errors import ConfigError, DataError
from zoo.recipes.bert_setup import bert_model_config, build_backbone, resolve_backbone
from zoo.recipes.engine.cli import main_for
from zoo.recipes.engine.config import OptimizerConfig, ScheduleConfig, TrainConfig
from zoo.recipes.engine.run import Datasets, Recipe
from zoo.rundir import RunDir, WordPieceSpec
from zoo.tasks.masked_lm import MaskedLMInfo

log = logging.getLogger("zoo")


@dataclass(frozen=True)
class CorpusConfig:
    """Plain-text files (globs allowed, comma-separated) and the masking scheme."""

    source: str = ""
    eval_source: str | None = None
    validation_split: float = 0.05
    sequence_length: int = 128
    vocab_size: int = 8000
    on_error: str = "raise"  # a bad row (not UTF-8, malformed JSON, a missing field...): raise, or skip and count
    vocab_sample_lines: int = 200_000  # a vocabulary learned from the data reads a seeded sample this big
    lowercase: bool = True
    mask_rate: float = 0.15
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    whole_word_masking: bool = False
    max_predictions: int = 0  # 0: mask_rate x sequence_length, rounded up
    # Streaming (zoo.data.stream): null (auto) streams corpora over 64 MB from their files, true always,
    # false reads the lines into memory (an exact seeded permutation every epoch).
    streaming: bool | None = None
    shuffle_buffer: int = 10_000        # streamed: lines shuffled together, after a seeded file order
    validation_max_lines: int = 10_000  # streamed or prepared: the validation lines (sequences) used
    # `zoo data prepare` only (counted in the manifest): drop exact-duplicate lines (the first is kept);
    # drop lines with fewer / more WordPiece tokens than these (0: no limit).
    dedup: bool = False
    min_line_tokens: int = 0
    max_line_tokens: int = 0

    def __post_init__(self) -> None:
        check_range("validation_split", self.validation_split, 0.0, 1.0, high_inclusive=False)
        check_range("sequence_length", self.sequence_length, 8)
        check_range("vocab_size", self.vocab_size, 16)
        check_choice("on_error", self.on_error, ("raise", "skip"))
        check_range("vocab_sample_lines", self.vocab_sample_lines, 1)
        check_range("mask_rate", self.mask_rate, 0.0, 1.0, low_inclusive=False)
        check_range("mask_token_rate", self.mask_token_rate, 0.0, 1.0)
        check_range("random_token_rate", self.random_token_rate, 0.0, 1.0)
        if self.mask_token_rate + self.random_token_rate > 1.0:
            raise ConfigError("mask_token_rate + random_token_rate must be at most 1 (the rest stay unchanged)")
        check_range("max_predictions", self.max_predictions, 0, self.sequence_length)
        check_range("shuffle_buffer", self.shuffle_buffer, 1)
        check_range("validation_max_lines", self.validation_max_lines, 1)
        check_range("min_line_tokens", self.min_line_tokens, 0)
        check_range("max_line_tokens", self.max_line_tokens, 0)
        if self.max_line_tokens and self.min_line_tokens > self.max_line_tokens:
            raise ConfigError("min_line_tokens is larger than max_line_tokens")

    @property
    def predictions(self) -> int:
        return self.max_predictions or max(1, math.ceil(self.mask_rate * self.sequence_length))


@dataclass(frozen=True)
class BertPretrainConfig:
    model: Any = field(default_factory=lambda: registry.default_config("bert_tiny"),
                       metadata={"polymorphic": bert_model_config})
    init: str = ""
    data: CorpusConfig = field(default_factory=CorpusConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, batch_size=32, optimizer=OptimizerConfig(name="adamw", learning_rate=5e-4, weight_decay=0.01),
        schedule=ScheduleConfig(name="linear", warmup_epochs=1.0)))


def mask_tokens(inputs: dict[str, Any], *, vocab_size: int, mask_id: int, special_ids: Sequence[int],
                max_predictions: int, rate: float = 0.15, mask_token_rate: float = 0.8,
                random_token_rate: float = 0.1, continuation: Any = None, seed: Any = None,
                ) -> tuple[dict[str, Any], Any, Any]:
    """Choose and corrupt positions for masked-LM training (dense ops, batched).

    Args:
      inputs: packed BERT inputs (``token_ids``, ``segment_ids``, ``padding_mask``), ``[B, L]``.
      continuation: optional bool vector over the vocabulary, True for ``##`` pieces; with it,
        whole words are chosen together (whole-word masking).
      seed: optional ``[2]`` int tensor for stateless randomness (reproducible masks).

    Returns:
      ``(inputs with token_ids corrupted and mask_positions [B, K], labels [B, K], weights [B, K])``.
    """
    import tensorflow as tf

    ids = tf.cast(inputs["token_ids"], tf.int32)
    batch, length = tf.shape(ids)[0], tf.shape(ids)[1]

    def uniform(shape, salt):
        if seed is None:
            return tf.random.uniform(shape)
        return tf.random.stateless_uniform(shape, seed=tf.cast(seed, tf.int64) + salt)

    special = tf.reduce_any(tf.equal(ids[..., tf.newaxis], tf.constant(list(special_ids), tf.int32)), axis=-1)
    candidate = (tf.cast(inputs["padding_mask"], tf.bool)) & ~special
    scores = uniform([batch, length], 0)
    if continuation is not None:
        # A word's tokens share the score of its first token, so they are chosen together.
        is_start = ~tf.gather(tf.constant(continuation, tf.bool), ids) | ~candidate
        word = tf.cumsum(tf.cast(is_start, tf.int32), axis=1) - 1
        segment = word + tf.range(batch)[:, tf.newaxis] * length
        start_scores = tf.where(is_start, scores, -1.0)
        word_max = tf.math.unsorted_segment_max(tf.reshape(start_scores, [-1]), tf.reshape(segment, [-1]),
                                                batch * length)
        scores = tf.gather(word_max, segment)
    scores = tf.where(candidate, scores, -2.0)
    count = tf.reduce_sum(tf.cast(candidate, tf.float32), axis=1)
    n_mask = tf.minimum(tf.cast(tf.round(rate * count), tf.int32), max_predictions)
    n_mask = tf.where(count > 0, tf.maximum(n_mask, 1), 0)
    k = max_predictions  # static, at most the packed length (checked by the caller's config)
    top = tf.math.top_k(scores, k=k, sorted=True).indices  # [B, K]
    chosen = tf.range(k)[tf.newaxis, :] < n_mask[:, tf.newaxis]
    chosen &= tf.gather(candidate, top, batch_dims=1)
    positions = tf.where(chosen, top, 0)
    labels = tf.gather(ids, positions, batch_dims=1)
    roll = uniform(tf.shape(positions), 1)
    random_ids = tf.cast(tf.floor(uniform(tf.shape(positions), 2) * vocab_size), tf.int32)
    replacement = tf.where(roll < mask_token_rate, mask_id,
                           tf.where(roll < mask_token_rate + random_token_rate, random_ids, labels))
    rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(positions))
    index = tf.stack([tf.boolean_mask(rows, chosen), tf.boolean_mask(positions, chosen)], axis=1)
    corrupted = tf.tensor_scatter_nd_update(ids, index, tf.boolean_mask(replacement, chosen))
    out = dict(inputs)
    out["token_ids"] = corrupted
    out["mask_positions"] = positions
    return out, labels, tf.cast(chosen, tf.float32)


def _files_of(spec: str) -> list[str]:
    """The files a comma-separated list of paths and globs names."""
    from zoo.data.text import corpus_files

    return corpus_files([p.strip() for p in spec.split(",") if p.strip()])


def _masking(cfg: BertPretrainConfig, pre: Any) -> tuple[Any, Any]:
    """``(masked(batch, seed=None), fixed_masks(batches, cache=True))`` for the run's preprocessor ``pre``:
    dynamic masks for training; fixed (stateless, seeded) masks for evaluation, so losses compare across
    epochs and runs. A batch is raw text (tokenized by ``pre``) or packed inputs (a prepared dataset)."""
    import tensorflow as tf

    d = cfg.data
    vocab = pre.vocabulary
    continuation = np.array([t.startswith("##") for t in vocab]) if d.whole_word_masking else None
    special = [pre.pad_id, pre.cls_id, pre.sep_id, pre.mask_id, pre.unk_id]
    options = dict(vocab_size=len(vocab), mask_id=pre.mask_id, special_ids=special, max_predictions=d.predictions,
                   rate=d.mask_rate, mask_token_rate=d.mask_token_rate, random_token_rate=d.random_token_rate,
                   continuation=continuation)

    def masked(batch: Any, seed: Any = None) -> Any:
        return mask_tokens(batch if isinstance(batch, dict) else pre(batch), seed=seed, **options)

    def fixed_masks(batches: Any, cache: bool = True) -> Any:
        ds = batches.enumerate().map(lambda i, t: masked(t, seed=tf.stack([tf.cast(cfg.train.seed, tf.int64), i])))
        return (ds.cache() if cache else ds).prefetch(tf.data.AUTOTUNE)

    return masked, fixed_masks


def _prepared_data(cfg: BertPretrainConfig, explicit: frozenset) -> tuple[BertPretrainConfig, Datasets]:
    """Training on a `zoo data prepare` directory: token ids already packed; the vocabulary, casing and
    sequence length are the dataset's (a run that sets others is refused)."""
    import dataclasses

    import tensorflow as tf

    from zoo.data.prepared import open_prepared
    from zoo.data.text import BadRows

    d = cfg.data
    prepared = open_prepared(d.source, RECIPE.name)
    for key, have in (("sequence_length", prepared.sequence_length), ("lowercase", prepared.lowercase)):
        if f"data.{key}" in explicit and getattr(d, key) != have:
            raise DataError(f"{d.source!r} was prepared with data.{key}={have}, this run asks for "
                            f"{getattr(d, key)}: drop --set data.{key}, or prepare the corpus again with it")
    if d.streaming is False:
        raise ConfigError("data.streaming=false reads text files into memory; a prepared dataset is always streamed")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, sequence_length=prepared.sequence_length,
                                                             lowercase=prepared.lowercase))
    cfg, pre, weights = resolve_backbone(cfg, explicit, list, prepared=prepared)
    masked, fixed_masks = _masking(cfg, pre)
    d, batch = cfg.data, cfg.train.batch_size
    n_train = prepared.examples("train")
    n_val = min(prepared.examples("validation"), d.validation_max_lines)

    def sharded_train(shard: Any = None, size: int = batch) -> Any:
        sequences = prepared.train_dataset(cfg.train.seed, d.shuffle_buffer, shard=shard).batch(size)
        return sequences.map(masked, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def service_train(size: int, first_pass: int, passes: int) -> Any:
        sequences = prepared.service_dataset(cfg.train.seed, d.shuffle_buffer, first_pass, passes)
        # Whole batches only: a trainer's step must not depend on which worker's share ended where.
        return sequences.batch(size, drop_remainder=True).map(masked, num_parallel_calls=tf.data.AUTOTUNE)

    validation = None
    if n_val:
        sequences = prepared.validation_dataset(n_val).batch(batch)
        validation = fixed_masks(sequences.apply(tf.data.experimental.assert_cardinality(math.ceil(n_val / batch))))
    bad = BadRows(d.on_error)
    test = None
    if d.eval_source:  # held-out raw text, tokenized on the fly
        from zoo.data import stream

        eval_files = _files_of(d.eval_source)
        stream.scan_corpus(eval_files, 0.0, 0, cfg.train.seed, bad=bad)
        test = fixed_masks(stream.all_lines(eval_files).batch(batch), cache=False)
    info = {"counts": {"train_sequences": n_train, "validation_sequences": n_val},
            "prepared": os.path.abspath(d.source), "vocab_size": len(pre.vocabulary), "streamed": True,
            "vocabulary_sha256": prepared.vocabulary_sha256, **bad.report()}
    return cfg, Datasets(train=sharded_train(), steps_per_epoch=max(1, math.ceil(n_train / batch)),
                         validation=validation, test=test, info=info,
                         files={RunDir.VOCAB: "\n".join(pre.vocabulary) + "\n"}, state=weights,
                         sharded_train=sharded_train, service_train=service_train)


def prepare_dataset(cfg: BertPretrainConfig, explicit: frozenset, out: str, *, workers: int, shards: int,
                    log: Any) -> dict[str, Any]:
    """``zoo data prepare bert_pretrain``: the vocabulary (``--init``'s, or learned from a seeded sample of
    the corpus), then packed, shuffled, sharded TFRecord files in ``out`` (``zoo.data.prepared``)."""
    from zoo.data import stream
    from zoo.data.prepared import PrepareSpec, check_out, prepare
    from zoo.data.text import BadRows

    check_out(out)
    d = cfg.data
    if not d.source:
        raise DataError("no corpus: pass --data with plain-text file(s), one sentence or passage per line, "
                        "documents separated by blank lines")
    files = _files_of(d.source)
    for f in files:
        if not os.path.isfile(f):
            raise DataError(f"corpus file {f!r} does not exist" if not os.path.exists(f) else
                            f"{f!r} is a directory; pass the text files in it (e.g. '{f}/*.txt')")

    def sample() -> list[str]:
        log(f"learning a {d.vocab_size}-token vocabulary from a sample of at most {d.vocab_sample_lines:,} lines")
        return list(stream.scan_corpus(files, 0.0, d.vocab_sample_lines, cfg.train.seed,
                                       bad=BadRows(d.on_error)).sample)

    cfg, pre, _ = resolve_backbone(cfg, explicit, sample)
    d = cfg.data
    spec = PrepareSpec(recipe=RECIPE.name, files=tuple(files), vocabulary=tuple(pre.vocabulary),
                       lowercase=pre.lowercase, sequence_length=d.sequence_length,
                       validation_split=d.validation_split, seed=cfg.train.seed, dedup=d.dedup,
                       min_line_tokens=d.min_line_tokens, max_line_tokens=d.max_line_tokens, on_error=d.on_error,
                       shards=shards, workers=workers, source=d.source, extra={"init": cfg.init})
    return prepare(spec, out, log)


def prepare_data(cfg: BertPretrainConfig, explicit: frozenset) -> tuple[BertPretrainConfig, Datasets]:
    import tensorflow as tf

    from zoo.data import stream
    from zoo.data.order import slices, text_array
    from zoo.data.splits import train_eval_split
    from zoo.data.text import BadRows, read_text_corpus

    d = cfg.data
    if not d.source:
        raise DataError("no corpus: pass --data with plain-text file(s), one sentence or passage per line")

    cleaning = sorted({"data.dedup", "data.min_line_tokens", "data.max_line_tokens"} & explicit)
    if cleaning:
        raise ConfigError(f"{', '.join(cleaning)} applies when a corpus is prepared: `zoo data prepare bert_pretrain "
                          "--data ... --out DIR --set ...`, then `zoo train bert_pretrain --data DIR`")
    if os.path.isdir(d.source):
        return _prepared_data(cfg, explicit)
    files = _files_of(d.source)
    eval_files = _files_of(d.eval_source) if d.eval_source else []
    streamed = stream.streams(d.streaming, files)
    bad = BadRows(d.on_error)
    # Validation (per-epoch loss, early stopping) is carved from the training corpus; --eval-data, if
    # given, is scored once at the end (test_loss, test_masked_accuracy).
    check = None  # the scan checked every line; a sampled corpus is checked as the pipeline reads it
    if streamed:
        # Step mode needs no line counts: a large corpus is sampled, not scanned, so training starts at once.
        survey = stream.sample_corpus if cfg.train.steps else stream.scan_corpus
        scan = survey(files, d.validation_split, d.vocab_sample_lines, cfg.train.seed, bad=bad)
        stream.check_parts(scan.train_lines, scan.validation_lines if d.validation_split > 0 else 1, d.source,
                           d.validation_split, "line", "line")
        n_train, n_val = scan.train_lines, min(scan.validation_lines, d.validation_max_lines)
        if not scan.counted:
            check = d.on_error
            log.info("step mode: %s (%.0f MB) sampled for the vocabulary, not scanned; about %d training lines; "
                     "lines that are not UTF-8 are %s as training reaches them", d.source, scan.bytes / 2**20,
                     n_train, "an error" if check == "raise" else "left out (not counted)")
            n_test = None  # not counted either
        else:
            n_test = stream.scan_corpus(eval_files, 0.0, 0, cfg.train.seed, bad=bad).train_lines if eval_files else 0
        cfg, pre, weights = resolve_backbone(cfg, explicit, lambda: list(scan.sample))
    else:
        lines = read_text_corpus(files, bad)
        train_idx, val_idx = train_eval_split(len(lines), d.validation_split, cfg.train.seed, min_eval=1, sort=False)
        val_lines = [lines[i] for i in val_idx]
        train_lines = [lines[i] for i in train_idx]
        del lines
        test_lines = read_text_corpus(eval_files, bad) if eval_files else []
        n_train, n_val, n_test = len(train_lines), len(val_lines), len(test_lines)
        cfg, pre, weights = resolve_backbone(cfg, explicit, lambda: train_lines)
    vocab = pre.vocabulary
    masked, fixed_masks = _masking(cfg, pre)

    batch = cfg.train.batch_size
    sharded_train = None
    if streamed:
        def sharded_train(shard: Any = None, size: int = batch) -> Any:
            lines = stream.train_lines(files, d.validation_split, cfg.train.seed, d.shuffle_buffer, shard=shard,
                                       check=check)
            return lines.batch(size).map(masked, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

        train_ds = sharded_train()
        lines = stream.validation_lines(files, d.validation_split, n_val, check=check).batch(batch)
        if scan.counted:  # the number of batches is known (a filtered stream cannot say it)
            lines = lines.apply(tf.data.experimental.assert_cardinality(math.ceil(n_val / batch)))
        validation = fixed_masks(lines)
        test = (fixed_masks(stream.all_lines(eval_files, check).batch(batch), cache=False)
                if eval_files and n_test != 0 else None)
    else:
        train_ds = slices(text_array(train_lines), cfg.train.seed, batch_size=batch)
        train_ds = train_ds.map(masked, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        validation = fixed_masks(slices(text_array(val_lines)).batch(batch))
        test = fixed_masks(slices(text_array(test_lines)).batch(batch)) if test_lines else None
    info = {"counts": {"train_lines": n_train, "validation_lines": n_val, "eval_lines": n_test},
            "vocab_size": len(vocab), "streamed": streamed, **bad.report()}
    if check is not None:  # estimates from the sample: nothing counted the corpus
        info["counts"] = {"estimated_train_lines": n_train, "estimated_validation_lines": scan.validation_lines,
                          "eval_lines": None}
        info["sampled"] = {"bytes_read": scan.bytes_read, "corpus_bytes": scan.bytes}
        info["skipped_rows"] = None if check == "skip" else 0  # left out as met, not counted
    return cfg, Datasets(train=train_ds, steps_per_epoch=max(1, math.ceil(n_train / batch)),
                         validation=validation, test=test, info=info, files={RunDir.VOCAB: "\n".join(vocab) + "\n"},
                         state=weights, sharded_train=sharded_train)


def build_model(cfg: BertPretrainConfig, data: Datasets) -> Any:
    from zoo.models.bert import BertMaskedLM

    return BertMaskedLM(build_backbone(cfg, data.state), name="bert_masked_lm")  # state: the initial weights


def compile_args(cfg: BertPretrainConfig) -> dict[str, Any]:
    import keras

    # The mean over the masked tokens (the sample weights), not over every prediction slot: a batch
    # whose rows mask fewer tokens than max_predictions would otherwise report a smaller loss.
    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
            "weighted_metrics": [keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")]}


def run_info(cfg: BertPretrainConfig, data: Datasets) -> MaskedLMInfo:
    return MaskedLMInfo(recipe=RECIPE.name, model="bert_masked_lm", backbone=cfg.model.name, init=cfg.init,
                        preprocessor=WordPieceSpec(RunDir.VOCAB, cfg.data.sequence_length, cfg.data.lowercase),
                        data=data.info)


FLAGS = {
    "--data": ("data.source", "plain-text file(s) or globs, comma-separated (documents separated by blank lines), "
                              "or a directory `zoo data prepare` wrote"),
    "--eval-data": ("data.eval_source", "held-out plain-text file(s)"),
    "--init": ("init", "hf:DIR, keras_hub:DIR or a run dir to continue from"),
}

RECIPE = Recipe(
    name="bert_pretrain",
    description="Masked-LM pretraining of a BERT from plain text (dynamic 80/10/10 masking, optional whole words).",
    config_class=BertPretrainConfig, prepare_data=prepare_data, build_model=build_model,
    compile_args=compile_args, run_info=run_info, flags=FLAGS, prepare_dataset=prepare_dataset)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
