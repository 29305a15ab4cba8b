"""Question answering from raw strings: windows, the model and the best span, in Python or in one graph.

    from zoo.answerer import Answerer
    qa = Answerer.from_run("runs/bert_qa-...")
    qa(["Where was Ada born?"], ["Ada Lovelace was born in London in 1815."])   # -> [Answer("London", ...)]

``Answerer.__call__`` builds features with ``zoo.data.squad`` and picks spans with ``best_answers``;
``Answerer.answer_graph`` does the same with TensorFlow ops only (tokenizer with offsets, windows over
the context, the model, an exhaustive span search, slicing the answer from the context bytes), which
is what an exported SavedModel runs. Both search every (start, end) pair the same way, so they agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.squad import Answer, QAExample, best_answers, build_features, window_grid
from zoo.errors import DataError

log = logging.getLogger(__name__)


class Answerer:
    def __init__(self, model: Any, vocabulary: Sequence[str], lowercase: bool, sequence_length: int,
                 doc_stride: int, max_query_length: int, max_answer_length: int,
                 null_threshold: float | None = None):
        from zoo.tokenizers import SPECIAL_TOKENS, fast_bert_parts, fast_bert_tokenizer

        self.model = model
        self.vocabulary, self.lowercase = list(vocabulary), bool(lowercase)
        self.sequence_length, self.doc_stride = int(sequence_length), int(doc_stride)
        self.max_query_length, self.max_answer_length = int(max_query_length), int(max_answer_length)
        self.null_threshold = null_threshold
        ids = {t: i for i, t in enumerate(self.vocabulary)}
        self.pad_id, _, self.cls_id, self.sep_id, _ = (ids[t] for t in SPECIAL_TOKENS)
        self.tokenizer = fast_bert_tokenizer(self.vocabulary, self.lowercase)
        self.normalizer, self.wordpiece = fast_bert_parts(self.vocabulary, self.lowercase)

    @classmethod
    def from_run(cls, run_dir: str) -> Answerer:
        from zoo.rundir import RunDir
        from zoo.tasks.question_answering import QuestionAnsweringInfo

        run = RunDir.open(run_dir)
        info = run.expect(QuestionAnsweringInfo, purpose="question answering")
        p = info.preprocessor
        return cls(run.load_model(), run.vocabulary(), p.lowercase, p.sequence_length, info.doc_stride,
                   info.max_query_length, info.max_answer_length, info.null_threshold)

    # -- Python path

    def __call__(self, questions: Sequence[str], contexts: Sequence[str], batch: int = 32) -> list[Answer]:
        if len(questions) != len(contexts):
            raise DataError(f"{len(questions)} questions but {len(contexts)} contexts")
        for k, (q, c) in enumerate(zip(questions, contexts)):
            if not str(q).strip() or not str(c).strip():
                raise DataError(f"question {k + 1}: an empty {'question' if not str(q).strip() else 'context'}")
        examples = [QAExample(str(k), str(q), str(c)) for k, (q, c) in enumerate(zip(questions, contexts))]
        features = build_features(examples, self.tokenizer, sequence_length=self.sequence_length,
                                  doc_stride=self.doc_stride, max_query_length=self.max_query_length,
                                  cls_id=self.cls_id, sep_id=self.sep_id, pad_id=self.pad_id)
        if features.truncated_questions:
            log.warning("%d question(s) longer than %d tokens were truncated", features.truncated_questions,
                        self.max_query_length)
        out = self.model.predict(features.inputs(), batch_size=batch, verbose=0)
        return best_answers(examples, features, np.asarray(out["start_logits"]), np.asarray(out["end_logits"]),
                            max_answer_length=self.max_answer_length, null_threshold=self.null_threshold)

    # -- graph path

    def answer_graph(self, question: Any, context: Any) -> dict[str, Any]:
        """TensorFlow ops only: ``question``, ``context`` tf.string ``[B]`` -> ``answer`` (tf.string),
        ``score`` (float32), ``start`` and ``end`` (int32 character offsets in the context; -1 when there is
        no answer), each ``[B]``.

        Written with dense ops and TF Text ops that TFLite has kernels for (no ragged helpers, no
        ``tf.strings``), so the same graph is the SavedModel's and the TFLite files'. Windows lie on a
        ``[B, W]`` grid (``W``: the most windows any context needs); grid cells past a context's own
        windows are scored ``-inf``.
        """
        import tensorflow as tf
        import tensorflow_text as tf_text

        L = self.sequence_length
        q_ids = self.tokenizer.tokenize(question)
        # The context in two steps, so that only the chosen tokens' offsets are mapped back through the
        # normalizer (dense gathers; see fast_bert_parts).
        normalized, to_input = self.normalizer.normalize_with_offsets(context)
        c_ids, c_begin, c_end = self.wordpiece.tokenize_with_offsets(normalized)
        g = window_grid(q_ids, c_ids, sequence_length=L, doc_stride=self.doc_stride,
                        max_query_length=self.max_query_length, cls_id=self.cls_id, sep_id=self.sep_id,
                        pad_id=self.pad_id)
        ids, segments, mask, valid, in_c = g.ids, g.segments, g.mask, g.valid, g.in_c
        batch, W, w_start, offset, c_start = g.batch, g.windows, g.w_start, g.offset, g.c_start
        out = self.model({"token_ids": ids, "segment_ids": segments, "padding_mask": mask}, training=False)
        s_log, e_log = tf.cast(out["start_logits"], tf.float32), tf.cast(out["end_logits"], tf.float32)
        # Exhaustive span search per window, as best_answers.
        i = tf.range(L)[:, tf.newaxis]
        j = tf.range(L)[tf.newaxis, :]
        allowed = (j >= i) & (j - i < self.max_answer_length)
        in_c = in_c & valid[:, tf.newaxis]
        ok = allowed[tf.newaxis] & in_c[:, :, tf.newaxis] & in_c[:, tf.newaxis, :]
        scores = tf.where(ok, s_log[:, :, tf.newaxis] + e_log[:, tf.newaxis, :], -np.inf)
        flat = tf.reshape(scores, [-1, L * L])
        w_best = tf.reshape(tf.argmax(flat, axis=1, output_type=tf.int32), [batch, W])
        w_score = tf.reshape(tf.reduce_max(flat, axis=1), [batch, W])
        ex_score = tf.reduce_max(w_score, axis=1)
        # The first window reaching the example's best score (ties: the earliest, as best_answers).
        chosen = tf.argmax(w_score, axis=1, output_type=tf.int32)
        first = tf.range(batch) * W + chosen                                       # its row in the N windows
        best = tf.gather(tf.reshape(w_best, [-1]), first)
        token_a = tf.gather(w_start, first) + best // L - tf.gather(offset[:, 0], first)   # context token index
        token_b = tf.gather(w_start, first) + best % L - tf.gather(offset[:, 0], first)
        last = tf.maximum(tf.size(c_ids.flat_values) - 1, 0)
        begin_norm = tf.gather(tf.concat([tf.cast(c_begin.flat_values, tf.int32), [0]], 0),
                               tf.clip_by_value(c_start + token_a, 0, last))
        end_norm = tf.gather(tf.concat([tf.cast(c_end.flat_values, tf.int32), [0]], 0),
                             tf.clip_by_value(c_start + token_b, 0, last))
        # Normalized-text offsets -> offsets in the input (to_input holds one entry per normalized byte + 1).
        map_values = tf.cast(to_input.flat_values, tf.int32)
        map_start = tf.cast(to_input.row_splits[:-1], tf.int32)
        begin_byte = tf.gather(map_values, map_start + begin_norm)
        end_byte = tf.gather(map_values, map_start + end_norm)
        found = ex_score > -np.inf
        null = tf.reduce_min(tf.where(tf.reshape(valid, [batch, W]),
                                      tf.reshape(s_log[:, 0] + e_log[:, 0], [batch, W]), np.inf), axis=1)
        if self.null_threshold is not None:
            found = found & ~(null - ex_score > self.null_threshold)
        begin_byte = tf.where(found, begin_byte, 0)
        end_byte = tf.where(found, end_byte, 0)
        splitter = tf_text.ByteSplitter()
        text = splitter.split_by_offsets(context, begin_byte[:, tf.newaxis], end_byte[:, tf.newaxis]).flat_values
        # Byte offsets -> character offsets: count the bytes before each that start a UTF-8 character.
        raw = splitter.split(context)
        byte = tf.cast(raw.flat_values, tf.int32)
        lead = tf.where((byte >= 0x80) & (byte < 0xC0), 0, 1)   # 10xxxxxx continues a character
        leads = tf.concat([[0], tf.cumsum(lead)], 0)
        row = tf.cast(raw.row_splits[:-1], tf.int32)
        start_char = tf.gather(leads, row + begin_byte) - tf.gather(leads, row)
        end_char = tf.gather(leads, row + end_byte) - tf.gather(leads, row)
        return {"answer": text, "score": tf.where(found, ex_score, null),
                "start": tf.where(found, start_char, -1), "end": tf.where(found, end_char, -1)}
