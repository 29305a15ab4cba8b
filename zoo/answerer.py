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

from zoo.data.squad import Answer, QAExample, best_answers, build_features
from zoo.errors import DataError

log = logging.getLogger(__name__)


class Answerer:
    def __init__(self, model: Any, vocabulary: Sequence[str], lowercase: bool, sequence_length: int,
                 doc_stride: int, max_query_length: int, max_answer_length: int,
                 null_threshold: float | None = None):
        from zoo.tokenizers import SPECIAL_TOKENS, fast_bert_tokenizer

        self.model = model
        self.vocabulary, self.lowercase = list(vocabulary), bool(lowercase)
        self.sequence_length, self.doc_stride = int(sequence_length), int(doc_stride)
        self.max_query_length, self.max_answer_length = int(max_query_length), int(max_answer_length)
        self.null_threshold = null_threshold
        ids = {t: i for i, t in enumerate(self.vocabulary)}
        self.pad_id, _, self.cls_id, self.sep_id, _ = (ids[t] for t in SPECIAL_TOKENS)
        self.tokenizer = fast_bert_tokenizer(self.vocabulary, self.lowercase)

    @classmethod
    def from_run(cls, run_dir: str) -> Answerer:
        from zoo.rundir import QuestionAnsweringInfo, RunDir

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
        no answer), each ``[B]``."""
        import tensorflow as tf

        L = self.sequence_length
        q_ids, _, _ = self.tokenizer.tokenize_with_offsets(question)
        c_ids, c_begin, c_end = self.tokenizer.tokenize_with_offsets(context)
        q_ids = q_ids[:, :self.max_query_length]
        q_len = tf.cast(q_ids.row_lengths(), tf.int32)
        c_len = tf.cast(c_ids.row_lengths(), tf.int32)
        budget = tf.maximum(L - q_len - 3, 1)
        step = tf.minimum(self.doc_stride, budget)
        n_windows = 1 + tf.maximum(0, (c_len - budget + step - 1) // step)       # window_starts' count
        example = tf.repeat(tf.range(tf.size(c_len)), n_windows)                  # [W]
        first = tf.repeat(tf.cumsum(n_windows, exclusive=True), n_windows)
        w_start = (tf.range(tf.size(example)) - first) * tf.gather(step, example)
        wq, wb = tf.gather(q_len, example), tf.gather(budget, example)
        w_len = tf.minimum(wb, tf.gather(c_len, example) - w_start)               # context tokens in the window
        pos = tf.range(L)[tf.newaxis, :]
        offset = (wq + 2)[:, tf.newaxis]
        q_flat = tf.concat([tf.cast(q_ids.values, tf.int32), [self.pad_id]], 0)
        c_flat = tf.concat([tf.cast(c_ids.values, tf.int32), [self.pad_id]], 0)
        q_at = tf.gather(tf.cast(q_ids.row_starts(), tf.int32), example)[:, tf.newaxis] + pos - 1
        c_at = (tf.gather(tf.cast(c_ids.row_starts(), tf.int32), example) + w_start)[:, tf.newaxis] + pos - offset
        in_q = (pos >= 1) & (pos < offset - 1)
        in_c = (pos >= offset) & (pos < offset + w_len[:, tf.newaxis])
        sep = (pos == offset - 1) | (pos == offset + w_len[:, tf.newaxis])
        last_q, last_c = tf.size(q_flat) - 1, tf.size(c_flat) - 1
        ids = tf.fill(tf.shape(in_q), self.pad_id)
        ids = tf.where(in_q, tf.gather(q_flat, tf.clip_by_value(q_at, 0, last_q)), ids)
        ids = tf.where(in_c, tf.gather(c_flat, tf.clip_by_value(c_at, 0, last_c)), ids)
        ids = tf.where(sep, self.sep_id, ids)
        ids = tf.where(pos == 0, self.cls_id, ids)
        segments = tf.cast((pos >= offset) & (pos <= offset + w_len[:, tf.newaxis]), tf.int32)
        mask = tf.cast(pos <= offset + w_len[:, tf.newaxis], tf.int32)
        out = self.model({"token_ids": ids, "segment_ids": segments, "padding_mask": mask}, training=False)
        s_log, e_log = tf.cast(out["start_logits"], tf.float32), tf.cast(out["end_logits"], tf.float32)
        # Exhaustive span search per window, as best_answers.
        i = tf.range(L)[:, tf.newaxis]
        j = tf.range(L)[tf.newaxis, :]
        allowed = (j >= i) & (j - i < self.max_answer_length)
        ok = allowed[tf.newaxis] & in_c[:, :, tf.newaxis] & in_c[:, tf.newaxis, :]
        scores = tf.where(ok, s_log[:, :, tf.newaxis] + e_log[:, tf.newaxis, :], -np.inf)
        flat = tf.reshape(scores, [-1, L * L])
        w_best = tf.argmax(flat, axis=1, output_type=tf.int32)
        w_score = tf.reduce_max(flat, axis=1)
        batch = tf.size(c_len)
        ex_score = tf.math.unsorted_segment_max(w_score, example, batch)
        # The first window reaching the example's best score (ties: the earliest, as best_answers).
        is_best = tf.equal(w_score, tf.gather(ex_score, example))
        index = tf.range(tf.size(example))
        chosen = tf.math.unsorted_segment_min(tf.where(is_best, index, tf.size(example)), example, batch)
        a = tf.gather(w_best, chosen) // L
        b = tf.gather(w_best, chosen) % L
        token_a = tf.gather(w_start, chosen) + a - tf.gather(offset[:, 0], chosen)  # context token indices
        token_b = tf.gather(w_start, chosen) + b - tf.gather(offset[:, 0], chosen)
        begin_byte = tf.gather(c_begin.values, tf.cast(c_ids.row_starts(), tf.int64) + tf.cast(token_a, tf.int64))
        end_byte = tf.gather(c_end.values, tf.cast(c_ids.row_starts(), tf.int64) + tf.cast(token_b, tf.int64))
        found = tf.math.is_finite(ex_score)
        null = tf.math.unsorted_segment_min(s_log[:, 0] + e_log[:, 0], example, batch)
        if self.null_threshold is not None:
            found = found & ~(null - ex_score > self.null_threshold)
        begin_byte = tf.where(found, begin_byte, 0)
        end_byte = tf.where(found, end_byte, 0)
        text = tf.strings.substr(context, tf.cast(begin_byte, tf.int32), tf.cast(end_byte - begin_byte, tf.int32))
        start_char = tf.strings.length(tf.strings.substr(context, tf.zeros_like(begin_byte, tf.int32),
                                                         tf.cast(begin_byte, tf.int32)),
                                       unit="UTF8_CHAR")
        end_char = start_char + tf.strings.length(text, unit="UTF8_CHAR")
        return {"answer": tf.where(found, text, ""), "score": tf.where(found, ex_score, null),
                "start": tf.where(found, start_char, -1), "end": tf.where(found, end_char, -1)}
