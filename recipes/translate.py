"""Recipe: train a Transformer encoder-decoder on any text-to-text task from TSV pairs.

    zoo train translate --data train.tsv --eval-data dev.tsv --set model.preset=transformer_small
    zoo translate runs/<run> "some source sentence" --beam 4

Each line of the data is ``source<TAB>target`` (translation, summarization, normalization...).
WordPiece vocabularies are learned from the training pairs (one shared, or one per side with
``data.shared_vocabulary=false``). Training: teacher forcing, label-smoothed cross-entropy with
padding masked out, batches of similar lengths (little padding). After every epoch the eval set
is decoded (greedy by default) and scored: corpus BLEU (sacreBLEU) and exact match, logged as
``val_bleu`` / ``val_exact_match`` (metrics.json, TensorBoard, usable by early stopping).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import registry
from zoo.config import check_choice, check_range
from zoo.errors import ConfigError, DataError
from zoo.models.decoding import DecodeConfig
from zoo.recipes.engine.cli import main_for
from zoo.recipes.engine.config import OptimizerConfig, ScheduleConfig, TrainConfig
from zoo.recipes.engine.run import Datasets, Recipe
from zoo.rundir import RunDir, Seq2SeqTextSpec, SignatureTensor
from zoo.tasks.translation import TranslationInfo

log = logging.getLogger(__name__)


seq2seq_model_config = registry.preset_config_for("seq2seq", "seq2seq")


@dataclass(frozen=True)
class PairDataConfig:
    """TSV files of ``source<TAB>target`` lines. Lengths are in WordPiece tokens."""

    source: str = ""
    eval_source: str | None = None
    validation_split: float = 0.1
    max_source_length: int = 64
    max_target_length: int = 64
    vocab_size: int = 8000
    on_error: str = "raise"  # a bad row (not UTF-8, malformed JSON, a missing field...): raise, or skip and count
    shared_vocabulary: bool = True
    lowercase: bool = False
    bucket_window: int = 50
    eval_sample_size: int = 256
    bleu_every_epoch: bool = True
    vocab_sample_lines: int = 200_000  # the vocabularies are learned from a seeded sample of this many pairs
    # Streaming (zoo.data.labelled): null (auto) streams a training file over 64 MB from disk, true always,
    # false reads it into memory. Streamed, the validation part is the pairs whose source hashes into the
    # first validation_split of the range, and at most eval_max_pairs of them (the first, in file order)
    # are decoded for BLEU (without --eval-data, also at the end).
    streaming: bool | None = None
    shuffle_buffer: int = 10_000
    eval_max_pairs: int = 5_000

    def __post_init__(self) -> None:
        check_range("validation_split", self.validation_split, 0.0, 1.0, high_inclusive=False)
        check_range("max_source_length", self.max_source_length, 1)
        check_range("max_target_length", self.max_target_length, 2)
        check_range("vocab_size", self.vocab_size, 16)
        check_choice("on_error", self.on_error, ("raise", "skip"))
        check_range("bucket_window", self.bucket_window, 1)
        check_range("eval_sample_size", self.eval_sample_size, 1)
        check_range("vocab_sample_lines", self.vocab_sample_lines, 1)
        check_range("shuffle_buffer", self.shuffle_buffer, 1)
        check_range("eval_max_pairs", self.eval_max_pairs, 1)


@dataclass(frozen=True)
class TranslateConfig:
    """Model (a seq2seq preset), data, label smoothing, decoding for evaluation, training."""

    model: Any = field(default_factory=lambda: registry.default_config("transformer_tiny"),
                       metadata={"polymorphic": seq2seq_model_config})
    data: PairDataConfig = field(default_factory=PairDataConfig)
    label_smoothing: float = 0.1
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=20, batch_size=64, optimizer=OptimizerConfig(name="adam", learning_rate=1e-3, beta_2=0.98,
                                                            epsilon=1e-9, global_clipnorm=1.0),
        schedule=ScheduleConfig(name="rsqrt", warmup_epochs=1.0)))

    def __post_init__(self) -> None:
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_inclusive=False)


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int, end: bool) -> tuple[np.ndarray, int]:
    """Padded id matrix (end token appended when ``end``) and how many texts were truncated."""
    from zoo.translator import pad_ids

    ragged = tokenizer.tokenize(np.asarray(texts, dtype=object))
    budget = max_length - (1 if end else 0)
    truncated = int((ragged.row_lengths().numpy() > budget).sum())
    ids, _ = pad_ids(ragged, max_length, tokenizer.pad_id, tokenizer.end_id if end else None)
    return ids.numpy(), truncated


@dataclass(frozen=True)
class TranslateState:
    """What prepare_data hands the decoding callbacks and evaluate: tokenizers and (sources, references)."""

    source_tokenizer: Any
    target_tokenizer: Any
    val_pairs: tuple[list[str], list[str]]
    eval_pairs: tuple[list[str], list[str]]


def _read_pairs(cfg: TranslateConfig, bad: Any) -> tuple[Any, list[str], list[str], list[str], list[str]]:
    """``(training pairs, val sources, val targets, vocabulary sources, vocabulary targets)``: the training
    pairs are ``(sources, targets)`` lists in memory, or a ``zoo.data.labelled.StreamedRows`` with its counts
    (``data.streaming``); the vocabularies are learned from at most ``data.vocab_sample_lines`` pairs."""
    from zoo.data.splits import train_eval_split
    from zoo.data.stream import check_parts, streams
    from zoo.data.text import read_text_pairs

    d, seed = cfg.data, cfg.train.seed
    if streams(d.streaming, [d.source]):
        from zoo.data.labelled import scan_pairs, streamed_pairs

        scan = scan_pairs(d.source, d.validation_split, d.vocab_sample_lines, seed, bad, d.eval_max_pairs)
        check_parts(scan.train, scan.validation, d.source, d.validation_split, "pair", "source")
        val_src, val_tgt = ([list(side) for side in zip(*scan.first_validation)])
        vocab_src, vocab_tgt = ([list(side) for side in zip(*scan.sample)])
        return ((streamed_pairs(d.source, d.validation_split), scan.train, scan.validation), val_src, val_tgt,
                vocab_src, vocab_tgt)
    sources, targets, _ = read_text_pairs(d.source, bad)
    # Validation (per-epoch loss, BLEU, early stopping) is carved from the training pairs; the final
    # evaluation and the export sample use --eval-data, or the validation pairs when there is none.
    train_idx, val_idx = train_eval_split(len(sources), d.validation_split, seed)
    if len(val_idx) == 0:
        raise DataError(f"data.validation_split={d.validation_split} leaves no validation pairs of the "
                        f"{len(sources)} in {d.source!r}; raise it (e.g. 0.1)")
    val_src, val_tgt = [sources[i] for i in val_idx], [targets[i] for i in val_idx]
    sources, targets = [sources[i] for i in train_idx], [targets[i] for i in train_idx]
    vocab_src, vocab_tgt = sources, targets
    if len(sources) > d.vocab_sample_lines:
        from zoo.data.text import vocabulary_sample

        keep = vocabulary_sample(range(len(sources)), d.vocab_sample_lines, seed)
        vocab_src, vocab_tgt = [sources[i] for i in keep], [targets[i] for i in keep]
    return (sources, targets), val_src, val_tgt, vocab_src, vocab_tgt


def _streamed_batches(rows: Any, cfg: TranslateConfig, src_tok: Any, tgt_tok: Any, make_batch: Any,
                      bucketed: bool, batch: int | None = None) -> Any:
    """Batches of streamed ``(source, target)`` rows: tokenized in chunks, truncated (the target's end token
    kept), then grouped by length (training: batches of similar lengths, as the in-memory path's buckets)."""
    import tensorflow as tf

    d, batch = cfg.data, batch or cfg.train.batch_size
    pad_id, end_id = tgt_tok.pad_id, tgt_tok.end_id

    def encode(src: Any, tgt: Any) -> Any:
        s = src_tok.tokenize(src)[:, :d.max_source_length]
        t = tgt_tok.tokenize(tgt)[:, :d.max_target_length - 1]
        t = tf.concat([t, tf.fill([t.nrows(), 1], tf.cast(end_id, t.dtype))], axis=1)
        # Dense rows and their lengths: tf.data cannot unbatch a ragged batch into plain tensors.
        return (tf.cast(s.to_tensor(pad_id), tf.int32), tf.cast(s.row_lengths(), tf.int32),
                tf.cast(t.to_tensor(pad_id), tf.int32), tf.cast(t.row_lengths(), tf.int32))

    ids = (rows.batch(256).map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
           .map(lambda s, s_len, t, t_len: (s[:s_len], t[:t_len])))
    if bucketed:
        longest = d.max_source_length + d.max_target_length
        ids = ids.bucket_by_sequence_length(
            lambda s, t: tf.shape(s)[0] + tf.shape(t)[0], bucket_boundaries=list(range(8, longest, 8)),
            bucket_batch_sizes=[batch] * len(range(8, longest + 8, 8)), padding_values=(pad_id, pad_id))
    else:
        ids = ids.padded_batch(batch, padding_values=(pad_id, pad_id))
    return ids.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def prepare_data(cfg: TranslateConfig, explicit: frozenset) -> tuple[TranslateConfig, Datasets]:
    import tensorflow as tf

    from zoo.data.order import length_bucketed_batches
    from zoo.data.text import BadRows, read_text_pairs
    from zoo.tokenizers import TextTokenizer, build_vocabulary

    d = cfg.data
    if not d.source:
        raise DataError("no training data: pass --data FILE (TSV lines 'source<TAB>target')")
    bad = BadRows(d.on_error)
    pairs, val_src, val_tgt, vocab_src, vocab_tgt = _read_pairs(cfg, bad)
    streamed = not isinstance(pairs[0], list)
    if d.eval_source:
        eval_src, eval_tgt, _ = read_text_pairs(d.eval_source, bad)
    else:
        eval_src, eval_tgt = val_src, val_tgt

    if d.shared_vocabulary:
        vocab = build_vocabulary(vocab_src + vocab_tgt, d.vocab_size, lowercase=d.lowercase)
        src_tok = tgt_tok = TextTokenizer(vocab, d.lowercase)
    else:
        src_tok = TextTokenizer(build_vocabulary(vocab_src, d.vocab_size, lowercase=d.lowercase), d.lowercase)
        tgt_tok = TextTokenizer(build_vocabulary(vocab_tgt, d.vocab_size, lowercase=d.lowercase), d.lowercase)

    model_cfg = dataclasses.replace(
        cfg.model, vocab_size=src_tok.vocabulary_size,
        target_vocab_size=0 if d.shared_vocabulary else tgt_tok.vocabulary_size)
    for side in ("source", "target"):
        key = f"max_{side}_length"
        if f"model.{key}" not in explicit:
            model_cfg = dataclasses.replace(model_cfg, **{key: getattr(d, key)})
        elif getattr(d, key) > getattr(model_cfg, key):
            raise ConfigError(f"data.{key}={getattr(d, key)} exceeds model.{key}={getattr(model_cfg, key)}")
    cfg = dataclasses.replace(cfg, model=model_cfg)

    short = sum(len(t.split()) < 4 for t in val_tgt)
    if short > len(val_tgt) / 2:
        log.warning("%d of %d evaluation targets have fewer than 4 words: corpus BLEU counts 4-grams, so it stays "
                    "near 0 on such data however good the outputs are; read val_exact_match instead", short,
                    len(val_tgt))
    batch = cfg.train.batch_size
    start_id, pad_id = tgt_tok.start_id, tgt_tok.pad_id

    def make_batch(src: Any, tgt: Any) -> Any:
        # Trim the batch to its longest row, then teacher forcing: the decoder reads [START] y1..y_n-1.
        src = src[:, :tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(src != pad_id, tf.int32), 1)), 1)]
        tgt = tgt[:, :tf.reduce_max(tf.reduce_sum(tf.cast(tgt != pad_id, tf.int32), 1))]
        decoder_in = tf.concat([tf.fill([tf.shape(tgt)[0], 1], start_id), tgt[:, :-1]], axis=1)
        x = {"encoder_token_ids": src, "encoder_padding_mask": tf.cast(src != pad_id, tf.int32),
             "decoder_token_ids": decoder_in, "decoder_padding_mask": tf.cast(decoder_in != pad_id, tf.int32)}
        return x, tgt, tf.cast(tgt != pad_id, tf.float32)

    if streamed:
        rows, n_train, n_val = pairs

        def sharded_train(shard: Any = None, size: int = batch) -> Any:
            return _streamed_batches(rows.train(cfg.train.seed, d.shuffle_buffer, shard=shard), cfg, src_tok,
                                     tgt_tok, make_batch, bucketed=True, batch=size)

        train_ds = sharded_train()
        val_ds = _streamed_batches(rows.part("validation"), cfg, src_tok, tgt_tok, make_batch, bucketed=False).apply(
            tf.data.experimental.assert_cardinality(math.ceil(n_val / batch)))
        steps, counts, truncated = max(1, math.ceil(n_train / batch)), {"train": n_train, "validation": n_val}, None
    else:
        sources, targets = pairs
        src_ids, src_cut = _encode(src_tok, sources, d.max_source_length, end=False)
        tgt_ids, tgt_cut = _encode(tgt_tok, targets, d.max_target_length, end=True)
        if src_cut or tgt_cut:
            log.warning("truncated %d source(s) to data.max_source_length=%d and %d target(s) to "
                        "data.max_target_length=%d tokens (end token included)", src_cut, d.max_source_length,
                        tgt_cut, d.max_target_length)
        val_src_ids, _ = _encode(src_tok, val_src, d.max_source_length, end=False)
        val_tgt_ids, _ = _encode(tgt_tok, val_tgt, d.max_target_length, end=True)
        lengths = (src_ids != src_tok.pad_id).sum(1) + (tgt_ids != tgt_tok.pad_id).sum(1)
        epochs = cfg.train.epochs
        if cfg.train.steps:  # step mode: as many passes as the steps need (the order is built ahead, per pass)
            per_pass = len(lengths) // min(batch, len(lengths))  # batches per pass, as length_bucketed_batches cuts
            epochs = -(-cfg.train.steps * cfg.train.gradient_accumulation_steps // per_pass)
        order = length_bucketed_batches(lengths, batch, epochs, cfg.train.seed, d.bucket_window)
        steps = len(order) // epochs
        src_c, tgt_c = tf.constant(src_ids), tf.constant(tgt_ids)
        train_ds = (tf.data.Dataset.from_tensor_slices(order)
                    .map(lambda idx: make_batch(tf.gather(src_c, idx), tf.gather(tgt_c, idx)))
                    .prefetch(tf.data.AUTOTUNE))
        val_ds = (tf.data.Dataset.from_tensor_slices((val_src_ids, val_tgt_ids)).batch(batch)
                  .map(make_batch).prefetch(tf.data.AUTOTUNE))
        counts, truncated = {"train": len(sources), "validation": len(val_src)}, {"source": src_cut, "target": tgt_cut}
        sharded_train = None
    n_sample = min(d.eval_sample_size, len(eval_src))
    files = {RunDir.VOCAB: "\n".join(src_tok.vocabulary) + "\n"}
    if not d.shared_vocabulary:
        files[RunDir.TARGET_VOCAB] = "\n".join(tgt_tok.vocabulary) + "\n"
    info = {"counts": {**counts, "eval": len(eval_src)}, **bad.report(), "truncated": truncated, "streamed": streamed}
    return cfg, Datasets(
        train=train_ds, steps_per_epoch=steps, validation=val_ds, test=None,
        eval_sample=(np.asarray(eval_src[:n_sample], dtype=str), np.asarray(eval_tgt[:n_sample], dtype=str)),
        calibration=None, info=info, files=files,
        state=TranslateState(src_tok, tgt_tok, (val_src, val_tgt), (eval_src, eval_tgt)), sharded_train=sharded_train)


def build_model(cfg: TranslateConfig, data: Datasets) -> Any:
    from zoo.models.seq2seq import build_seq2seq

    return build_seq2seq(cfg.model)


def compile_args(cfg: TranslateConfig) -> dict[str, Any]:
    import keras

    from zoo.losses import LabelSmoothedCrossEntropy

    return {"loss": LabelSmoothedCrossEntropy(cfg.label_smoothing),
            "weighted_metrics": [keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")]}


def translator_for(cfg: TranslateConfig, model: Any, data: Datasets) -> Any:
    from zoo.translator import Translator

    # The plain graph (no XLA): the run's BLEU and exact match are then those of the graph the
    # export publishes and checks, not of an XLA build that may break a near-tie differently.
    return Translator(model, data.state.source_tokenizer, data.state.target_tokenizer,
                      cfg.data.max_source_length, cfg.decode, jit_compile=False)


def score(translator: Any, sources: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (sacreBLEU, 13a tokenization) and exact match of ``translator`` on a set."""
    from zoo.metrics import corpus_bleu, exact_match

    hypotheses = translator(list(sources))
    return {"bleu": corpus_bleu(hypotheses, references), "exact_match": exact_match(hypotheses, references)}


def callbacks(cfg: TranslateConfig, data: Datasets) -> list[Any]:
    if not cfg.data.bleu_every_epoch:
        return []
    import keras

    sources, references = data.state.val_pairs
    n = cfg.data.eval_sample_size

    class EvalTranslations(keras.callbacks.Callback):
        """Decode the first ``eval_sample_size`` validation sources after every epoch; log BLEU and exact match."""

        translator = None

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self.translator is None:  # one traced decoding graph for the whole run
                self.translator = translator_for(cfg, self.model, data)
            scores = score(self.translator, sources[:n], references[:n])
            if logs is not None:
                logs.update({f"val_{k}": v for k, v in scores.items()})

    return [EvalTranslations()]


def evaluate(cfg: TranslateConfig, model: Any, data: Datasets) -> dict[str, float]:
    sources, references = data.state.eval_pairs
    return {f"eval_{k}": v for k, v in score(translator_for(cfg, model, data), sources, references).items()}


def run_info(cfg: TranslateConfig, data: Datasets) -> TranslationInfo:
    d = cfg.data
    return TranslationInfo(
        recipe=RECIPE.name, model=cfg.model.name, data=data.info,
        input=SignatureTensor("text", "string", (None,)), output=SignatureTensor("translation", "string", (None,)),
        preprocessor=Seq2SeqTextSpec(RunDir.VOCAB, RunDir.VOCAB if d.shared_vocabulary else RunDir.TARGET_VOCAB,
                                     d.max_source_length, d.max_target_length, d.lowercase),
        decode=dataclasses.asdict(cfg.decode))


FLAGS = {
    "--data": ("data.source", "training TSV: source<TAB>target per line"),
    "--eval-data": ("data.eval_source", "evaluation TSV of the same kind"),
}

RECIPE = Recipe(
    name="translate",
    description="Train a Transformer encoder-decoder on source<TAB>target pairs (translation, summarization...).",
    config_class=TranslateConfig, prepare_data=prepare_data, build_model=build_model,
    compile_args=compile_args, run_info=run_info, evaluate=evaluate, callbacks=callbacks, flags=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
