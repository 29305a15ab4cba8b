"""WordPiece tokenization and BERT input packing, in-graph (tf.data, SavedModel and TFLite).

``BertPreprocessor`` turns raw strings (or pairs of strings) into ``token_ids``,
``segment_ids`` and ``padding_mask``: ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``, pairs
truncated round-robin, padded to ``sequence_length``.

Tokenization is tensorflow-text's ``FastBertTokenizer`` with BERT-uncased normalization (one of
the few TF Text ops TFLite runs natively). The packing is written with dense ops only (range,
gather, where, minimum) instead of ragged ones, because TFLite has no kernels for ops such as
``RaggedRange``; so the same graph converts to TFLite.

Known difference from the reference (Python ``str.lower``) BERT tokenizer: the fast normalizer
case-folds with NFKC, so compatibility characters differ: ``ß`` -> ``ss``, ligatures (``ﬁ``) and
full-width letters are decomposed, Greek final sigma folds to ``σ``. Plain text, accents,
punctuation, CJK and ``##`` pieces match exactly (tested against the reference tokenizer).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import keras

from zoo.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_vocabulary(path: str) -> list[str]:
    """Read a ``vocab.txt`` (one token per line) with errors that name the file."""
    if not os.path.isfile(path):
        raise DataError(f"vocabulary file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            vocab = [line.rstrip("\n").rstrip("\r") for line in fh]
    except UnicodeDecodeError as exc:
        raise DataError(f"vocabulary file {path!r} is not UTF-8 ({exc})") from exc
    while vocab and vocab[-1] == "":
        vocab.pop()
    check_vocabulary(vocab, path)
    return vocab


def check_vocabulary(vocab: Sequence[str], where: str = "the vocabulary") -> None:
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(f"{where} lacks the special tokens {', '.join(missing)}; a BERT vocabulary needs "
                        f"{', '.join(SPECIAL_TOKENS)}")
    if len(set(vocab)) != len(vocab):
        raise DataError(f"{where} has duplicate tokens; each line must hold a distinct token")


def build_vocabulary(texts: Iterable[str], vocab_size: int, lowercase: bool = True) -> list[str]:
    """Learn a WordPiece vocabulary from raw texts (tensorflow-text's BERT vocab tool).

    The special tokens come first, [PAD] at id 0, as in BERT's own vocabularies.
    """
    import tensorflow as tf
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bert_vocab

    texts = list(texts)
    if not texts:
        raise DataError("cannot build a vocabulary from an empty corpus")
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(texts, dtype=tf.string)).batch(1024)
    learned = bert_vocab.bert_vocab_from_dataset(
        ds, vocab_size=vocab_size, reserved_tokens=list(SPECIAL_TOKENS),
        bert_tokenizer_params={"lower_case": lowercase}, learn_params={})
    return list(dict.fromkeys(learned))


def fast_bert_tokenizer(vocabulary: Sequence[str], lowercase: bool, detokenize: bool = False) -> Any:
    """tensorflow-text's ``FastBertTokenizer`` (BERT normalization + WordPiece, int32 ids).

    Built eagerly even when first used inside a tf.function or tf.data map, so that its model
    buffer is a constant every later graph can capture.
    """
    import tensorflow as tf
    import tensorflow_text as tf_text

    with tf.init_scope():
        return tf_text.FastBertTokenizer(vocab=list(vocabulary), token_out_type=tf.int32, unknown_token="[UNK]",
                                         lower_case_nfd_strip_accents=lowercase,
                                         support_detokenization=detokenize)


def fast_bert_parts(vocabulary: Sequence[str], lowercase: bool) -> tuple[Any, Any]:
    """The two halves of :func:`fast_bert_tokenizer`: ``FastBertNormalizer`` and ``FastWordpieceTokenizer``
    with the same settings, so their ids equal the whole tokenizer's.

    For graphs that need each token's byte span in the original text and must convert to TFLite:
    ``FastBertTokenizer.tokenize_with_offsets`` maps every offset back through the normalizer with a
    ragged batched gather (``RaggedRange``, which TFLite has no kernel for); with the two halves a graph
    maps back only the offsets it needs, with dense gathers.
    """
    import tensorflow as tf
    import tensorflow_text as tf_text

    with tf.init_scope():
        normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=lowercase)
        wordpiece = tf_text.FastWordpieceTokenizer(vocab=list(vocabulary), suffix_indicator="##",
                                                   max_bytes_per_word=100, token_out_type=tf.int32,
                                                   unknown_token="[UNK]", no_pretokenization=False)
    return normalizer, wordpiece


class TextTokenizer:
    """WordPiece ids for text-to-text models, and back to text (``##`` pieces joined), in-graph.

    Uses the BERT vocabulary layout: ``[CLS]`` starts a target sequence and ``[SEP]`` ends it.
    ``detokenize`` stops at the first ``[SEP]``, drops other special tokens and removes the space
    that WordPiece leaves before closing punctuation (``"a , b ."`` -> ``"a, b."``).
    """

    def __init__(self, vocabulary: Sequence[str], lowercase: bool = False):
        vocabulary = list(vocabulary)
        check_vocabulary(vocabulary)
        self.vocabulary, self.lowercase = vocabulary, bool(lowercase)
        ids = {t: i for i, t in enumerate(vocabulary)}
        self.pad_id, self.unk_id, self.start_id, self.end_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)
        self._tokenizer = None

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def _fast(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = fast_bert_tokenizer(self.vocabulary, self.lowercase, detokenize=True)
        return self._tokenizer

    def tokenize(self, texts: Any) -> Any:
        """Ids of each string: RaggedTensor ``[batch, (tokens)]``."""
        import tensorflow as tf

        return self._fast().tokenize(tf.convert_to_tensor(texts, dtype=tf.string))

    def detokenize(self, ids: Any) -> Any:
        """Strings ``[batch]`` from ids ``[batch, length]`` (dense, padded)."""
        import tensorflow as tf

        ids = tf.convert_to_tensor(ids, tf.int32)
        ended = tf.cumsum(tf.cast(tf.equal(ids, self.end_id), tf.int32), axis=1) > 0
        special = tf.reduce_any(tf.equal(ids[..., tf.newaxis], tf.constant(
            [self.pad_id, self.start_id, self.end_id, self.mask_id], tf.int32)), axis=-1)
        keep = tf.logical_not(tf.logical_or(ended, special))
        text = self._fast().detokenize(tf.ragged.boolean_mask(ids, keep))  # words joined by spaces
        return tf.strings.regex_replace(text, r" ([.,!?;:%)\]}])", r"\1")


@keras.saving.register_keras_serializable(package="zoo")
class BertPreprocessor(keras.layers.Layer):
    """Raw strings -> ``{"token_ids", "segment_ids", "padding_mask"}`` (int32, ``[batch, sequence_length]``).

    Call it on a string tensor ``[batch]`` or on a pair ``(first, second)`` of them.
    """

    def __init__(self, vocabulary: Sequence[str], sequence_length: int = 128, lowercase: bool = True,
                 **kwargs: Any):
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        vocabulary = list(vocabulary)
        check_vocabulary(vocabulary)
        if sequence_length < 3:
            raise DataError(f"sequence_length={sequence_length} leaves no room for text; use 8 or more")
        self.vocabulary = vocabulary
        self.sequence_length = int(sequence_length)
        self.lowercase = bool(lowercase)
        ids = {t: i for i, t in enumerate(vocabulary)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)
        self._tokenizer = None

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def _fast_tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = fast_bert_tokenizer(self.vocabulary, self.lowercase)
        return self._tokenizer

    def tokenize(self, texts: Any) -> Any:
        """WordPiece ids of each string, as a RaggedTensor ``[batch, (tokens)]``."""
        import tensorflow as tf

        return self._fast_tokenizer().tokenize(tf.convert_to_tensor(texts, dtype=tf.string))

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # Accept Python strings and lists (preprocessor(["a", "b"])): Keras layers take tensors only.
        import tensorflow as tf

        def as_tensor(x: Any) -> Any:
            return tf.constant(x, dtype=tf.string) if isinstance(x, (str, bytes, list)) else x

        if isinstance(inputs, tuple):
            inputs = tuple(as_tensor(x) for x in inputs)
        elif isinstance(inputs, list) and len(inputs) and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(as_tensor(list(x)) for x in zip(*inputs)) if len(inputs[0]) == 2 else as_tensor(inputs)
        else:
            inputs = as_tensor(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs: Any) -> dict[str, Any]:
        import tensorflow as tf

        texts = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        if len(texts) not in (1, 2):
            raise DataError(f"BertPreprocessor takes texts or a pair (first, second); got {len(texts)} inputs")
        texts = [tf.convert_to_tensor(t, dtype=tf.string) for t in texts]
        squeeze = texts[0].shape.rank == 0  # a single string: a batch of one
        if squeeze:
            texts = [tf.reshape(t, [1]) for t in texts]
        segments = [self.tokenize(t) for t in texts]
        packed = pack_segments([(s.values, s.row_splits) for s in segments], self.sequence_length,
                               self.cls_id, self.sep_id, self.pad_id)
        if squeeze:
            packed = {k: v[0] for k, v in packed.items()}
        return packed

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"vocabulary": self.vocabulary, "sequence_length": self.sequence_length,
                       "lowercase": self.lowercase})
        return config

    def compute_output_shape(self, input_shape: Any) -> dict[str, Any]:
        return {k: (None, self.sequence_length) for k in ("token_ids", "segment_ids", "padding_mask")}


def truncate_round_robin(lengths: Sequence[Any], budget: Any) -> list[Any]:
    """Per-example lengths after round-robin truncation of one or two segments to ``budget`` tokens.

    Tokens are taken one at a time from each segment in turn (first segment first), so the
    longer segment is cut first; for two segments this is ``a' = min(a, max(budget - b, ceil(budget / 2)))``.
    """
    import tensorflow as tf

    if len(lengths) == 1:
        return [tf.minimum(lengths[0], budget)]
    a, b = lengths
    a_kept = tf.minimum(a, tf.maximum(budget - b, (budget + 1) // 2))
    b_kept = tf.minimum(b, budget - a_kept)
    return [a_kept, b_kept]


def pack_segments(segments: Sequence[tuple[Any, Any]], sequence_length: int, cls_id: int, sep_id: int,
                  pad_id: int) -> dict[str, Any]:
    """Pack 1 or 2 token segments (each ``(values, row_splits)``) into BERT inputs with dense ops only."""
    import tensorflow as tf

    if len(segments) not in (1, 2):
        raise ValueError(f"expected 1 or 2 segments, got {len(segments)}")
    splits = [tf.cast(s, tf.int32) for _, s in segments]
    values = [tf.cast(v, tf.int32) for v, _ in segments]
    starts = [s[:-1] for s in splits]
    lengths = [s[1:] - s[:-1] for s in splits]
    budget = sequence_length - 1 - len(segments)  # [CLS] plus one [SEP] per segment
    kept = truncate_round_robin(lengths, budget)

    pos = tf.range(sequence_length, dtype=tf.int32)[tf.newaxis, :]  # [1, L]
    token_ids = tf.fill(tf.shape(pos + starts[0][:, tf.newaxis]), pad_id)
    segment_ids = tf.zeros_like(token_ids)
    token_ids = tf.where(pos == 0, cls_id, token_ids)
    offset = tf.ones_like(starts[0])[:, tf.newaxis]  # where the current segment begins
    for seg, (vals, start, n) in enumerate(zip(values, starts, kept)):
        n = n[:, tf.newaxis]
        inside = (pos >= offset) & (pos < offset + n)
        index = tf.clip_by_value(start[:, tf.newaxis] + pos - offset, 0, tf.maximum(tf.size(vals) - 1, 0))
        # tf.gather on an empty tensor fails; pad the values with one id that is never selected.
        gathered = tf.gather(tf.concat([vals, [pad_id]], 0), index)
        token_ids = tf.where(inside, gathered, token_ids)
        token_ids = tf.where(pos == offset + n, sep_id, token_ids)
        segment_ids = tf.where((pos >= offset) & (pos <= offset + n), seg, segment_ids)
        offset = offset + n + 1
    padding_mask = tf.cast(pos < offset, tf.int32)
    return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
