"""Strings in, strings out: tokenization, the encoder, the decoding loop and detokenization in one graph.

    import zoo.translator
    t = zoo.translator.Translator.from_run("runs/translate-...", method="beam", beam_width=4)
    t(["some source sentence"])            # -> ["its translation"]

The same graph (``Translator.translate``, a ``tf.function`` on a ``tf.string [batch]``) is what the
exported SavedModel's ``serving_default`` runs, with one difference: in process the greedy and beam
decoding loops are XLA-compiled by default (``jit_compile=None`` picks; on the benchmark CPU XLA
takes 0.3-0.65x the time per token of the plain graph, ``benchmarks/seq2seq.py``), while top-k and
top-p sampling stay on the plain graph, where XLA measured 1.6-4.8x slower (its CPU top-k and
categorical sampling over the vocabulary). The exporter builds its Translator with
``jit_compile=False``, because TF Serving's CPU build leaves XLA JIT off by default and a SavedModel
whose function must be XLA-compiled fails there. XLA orders float arithmetic differently, so on a
near-tie of two tokens the two graphs can pick different words; ``jit_compile=False`` (``zoo
translate --no-xla``) runs exactly the exported graph. Under XLA the sources are padded to a
power-of-two width (at least 8, at most ``max_source_length``), so a stream of batches compiles a
handful of shapes, not one per batch; padding is masked and does not change a translation. If XLA
cannot compile the loop, the Translator logs why and decodes without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.errors import DataError
from zoo.models.decoding import DecodeConfig, decode_config, generate

log = logging.getLogger(__name__)

XLA_METHODS = ("greedy", "beam")  # decoding methods XLA makes faster here (benchmarks/seq2seq.py)
# Wording of TensorFlow's errors when XLA cannot compile a cluster (tf2xla, XlaCompiler, the JIT).
XLA_REFUSALS = ("XLA", "compile-time constant", "compilation")


def pad_ids(ragged: Any, max_length: int, pad_id: int, end_id: int | None = None) -> tuple[Any, Any]:
    """Ragged ids -> (dense ids ``[batch, L]``, padding mask), truncated to ``max_length`` tokens
    (the end token, if given, included); L is the longest row of the batch, at least 1."""
    import tensorflow as tf

    budget = max_length - (1 if end_id is not None else 0)
    ids = ragged[:, :budget]
    if end_id is not None:
        ids = tf.concat([ids, tf.fill([ids.nrows(), 1], tf.cast(end_id, ids.dtype))], axis=1)
    dense = ids.to_tensor(default_value=pad_id)
    width = tf.maximum(tf.shape(dense)[1], 1)
    dense = tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]], constant_values=pad_id)
    lengths = ids.row_lengths()
    mask = tf.sequence_mask(lengths, width, dtype=tf.int32)
    return tf.cast(dense, tf.int32), mask


def xla_refused(exc: Exception) -> bool:
    """Whether a TensorFlow error says XLA could not compile a function (an op it lacks, a shape it
    cannot make static), as opposed to an error raised while running the graph (bad input text, a
    failed check), after which turning XLA off would change nothing but the speed."""
    text = str(exc)
    return any(marker in text for marker in XLA_REFUSALS)


class Translator:
    """A trained seq2seq model with its tokenizers and decoding settings."""

    def __init__(self, model: Any, source_tokenizer: Any, target_tokenizer: Any, max_source_length: int,
                 decode: DecodeConfig | None = None, jit_compile: bool | None = None):
        self.model = model
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.max_source_length = int(max_source_length)
        self.decode = decode or DecodeConfig()
        if jit_compile is None:  # XLA where it measured faster
            jit_compile = self.decode.method in XLA_METHODS
        self.jit_compile = bool(jit_compile)
        self._fn = None
        self._xla_generate = None
        self._warned = False

    @classmethod
    def from_run(cls, run_dir: str, jit_compile: bool | None = None, **decode_options: Any) -> Translator:
        """Load a finished ``translate`` run; ``decode_options`` are DecodeConfig fields (method, beam_width...)."""
        from zoo.rundir import RunDir
        from zoo.tasks.translation import TranslationInfo

        run = RunDir.open(run_dir)
        info = run.expect(TranslationInfo, purpose="translation (text-to-text decoding)")
        source, target = run.tokenizers()
        return cls(run.load_model(), source, target, info.preprocessor.max_source_length,
                   decode_config(**decode_options), jit_compile=jit_compile)

    def _decode_ids(self, ids: Any, mask: Any) -> Any:
        t = self.target_tokenizer
        return generate(self.model, ids, mask, t.start_id, t.end_id, t.pad_id, self.decode)

    def _generate(self, texts: Any) -> tuple[Any, Any]:
        """(generated target ids ``[batch, max_length]``, how many sources were truncated), tokenizing once."""
        import tensorflow as tf

        tokens = self.source_tokenizer.tokenize(texts)
        ids, mask = pad_ids(tokens, self.max_source_length, self.source_tokenizer.pad_id)
        truncated = tf.reduce_sum(tf.cast(tokens.row_lengths() > self.max_source_length, tf.int32))
        if not self.jit_compile:
            return self._decode_ids(ids, mask), truncated
        if self._xla_generate is None:
            self._xla_generate = tf.function(self._decode_ids, jit_compile=True, reduce_retracing=True)
        width = tf.shape(ids)[1]
        bucket = tf.cast(2.0 ** tf.math.ceil(tf.math.log(tf.cast(width, tf.float32)) / tf.math.log(2.0)), tf.int32)
        bucket = tf.maximum(width, tf.minimum(tf.maximum(bucket, 8), self.max_source_length))
        ids = tf.pad(ids, [[0, 0], [0, bucket - width]], constant_values=self.source_tokenizer.pad_id)
        mask = tf.pad(mask, [[0, 0], [0, bucket - width]])
        return self._xla_generate(ids, mask), truncated

    def generate_ids(self, texts: Any) -> Any:
        """Generated target ids ``[batch, max_length]`` (padded after the end token)."""
        return self._generate(texts)[0]

    def _translate_counting(self, texts: Any) -> tuple[Any, Any]:
        """(``tf.string [batch]`` translations, truncated-source count), graph-compiled on first use."""
        import tensorflow as tf

        if self._fn is None:
            def run(t: Any) -> tuple[Any, Any]:
                generated, truncated = self._generate(t)
                return self.target_tokenizer.detokenize(generated), truncated

            self._fn = tf.function(run, input_signature=[tf.TensorSpec([None], tf.string)])
        if not self.jit_compile:
            return self._fn(texts)
        try:
            return self._fn(texts)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError) as exc:
            if not xla_refused(exc):
                raise  # an error of the data or the graph, not of XLA: the plain graph would fail alike
            # XLA refuses an op or a shape: decode with the plain graph from now on (same results).
            log.info("XLA could not compile the decoding loop (%s); decoding without XLA",
                     str(exc).strip().splitlines()[0][:200])
            self.jit_compile, self._fn, self._xla_generate = False, None, None
            return self._translate_counting(texts)

    def translate(self, texts: Any) -> Any:
        """``tf.string [batch]`` -> ``tf.string [batch]`` (graph-compiled on first use)."""
        return self._translate_counting(texts)[0]

    def __call__(self, texts: Sequence[str] | str, batch_size: int = 64) -> list[str] | str:
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if any(not t.strip() for t in texts):
            raise DataError("empty source text: give at least one word to translate")
        out: list[str] = []
        too_long = 0
        for start in range(0, len(texts), batch_size):
            chunk = np.asarray(texts[start:start + batch_size], dtype=object)
            translations, truncated = self._translate_counting(chunk)
            out.extend(s.decode("utf-8") for s in translations.numpy())
            too_long += int(truncated)
        if too_long and not self._warned:
            self._warned = True
            log.warning("%d source text(s) are longer than max_source_length=%d tokens and were truncated "
                        "(this warning is shown once)", too_long, self.max_source_length)
        return out[0] if single else out
