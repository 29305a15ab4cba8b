"""SQuAD-format question answering data: reading, windows over long contexts, span labels, and the
best answer span back from start/end logits.

Files: SQuAD v1.1 / v2.0 JSON (``data[].paragraphs[].context / qas[].id, question, answers[].text,
answer_start, is_impossible``) or JSON Lines with one question per line (``id, question, context,
answers`` as a list of ``{text, answer_start}`` or as ``{"text": [...], "answer_start": [...]}``).

Features follow the original BERT: ``[CLS] question [SEP] context window [SEP]``, the question cut to
``max_query_length`` tokens, the context cut into windows of what is left of the sequence, each
starting ``doc_stride`` tokens after the previous one; an answer that is not wholly inside a window is
labelled with position 0 ([CLS]) there, as unanswerable questions are. Tokens keep their character
spans in the original context (tensorflow-text reports byte offsets; they are mapped to characters),
so answers are sliced from the context with its own casing and accents.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QAExample:
    qid: str
    question: str
    context: str
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()  # character offsets in ``context``

    @property
    def impossible(self) -> bool:
        return not self.answers


# -- reading


def read_squad(path: str) -> list[QAExample]:
    """Every question in a SQuAD JSON or JSON Lines file, checked (errors name the file and question id)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (SQuAD JSON or JSON Lines expected)")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte {exc.start}); save it as UTF-8") from exc
    stripped = text.lstrip()
    examples: list[QAExample] = []
    if stripped.startswith("{") and '"data"' in stripped[:2000] and _is_single_json(stripped):
        doc = json.loads(stripped)
        if not isinstance(doc.get("data"), list):
            raise DataError(f"{path}: 'data' must be a list of articles (SQuAD format)")
        for a, article in enumerate(doc["data"]):
            for p, paragraph in enumerate(_get(article, "paragraphs", list, f"{path}: data[{a}]")):
                where = f"{path}: data[{a}].paragraphs[{p}]"
                context = _get(paragraph, "context", str, where)
                for q, qa in enumerate(_get(paragraph, "qas", list, where)):
                    examples.append(_example(qa, context, f"{where}.qas[{q}]", path))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}); expected SQuAD JSON or one JSON object "
                                "per line") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}:{n}: expected a JSON object with question, context and answers")
            examples.append(_example(record, _get(record, "context", str, f"{path}:{n}"), f"{path}:{n}", path))
    if not examples:
        raise DataError(f"{path}: no questions found")
    ids = [e.qid for e in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: question id {dup!r} appears more than once")
    return examples


def _is_single_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError as exc:
        if text.count("\n") and exc.msg == "Extra data":  # JSON Lines whose first record mentions "data"
            return False
        raise DataError(f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from exc
    return True


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing '{key}'")
    if not isinstance(obj[key], kind):
        raise DataError(f"{where}: '{key}' must be a {kind.__name__}, got {type(obj[key]).__name__}")
    return obj[key]


def _example(qa: Any, context: str, where: str, path: str) -> QAExample:
    qid = str(qa.get("id", where)) if isinstance(qa, dict) else where
    question = _get(qa, "question", str, f"{where} (question {qid})")
    if not context.strip():
        raise DataError(f"{where}: question {qid} has an empty context")
    if not question.strip():
        raise DataError(f"{where}: question {qid} is empty")
    answers = qa.get("answers", [])
    if isinstance(answers, dict):  # Hugging Face datasets: {"text": [...], "answer_start": [...]}
        answers = [{"text": t, "answer_start": s} for t, s in zip(answers.get("text", []),
                                                                  answers.get("answer_start", []))]
    if not isinstance(answers, list):
        raise DataError(f"{where}: question {qid}: 'answers' must be a list of {{text, answer_start}}")
    if qa.get("is_impossible", False):
        answers = []
    texts, starts = [], []
    for answer in answers:
        text = _get(answer, "text", str, f"{where}: question {qid} answer")
        start = _get(answer, "answer_start", int, f"{where}: question {qid} answer")
        if context[start:start + len(text)] != text:
            raise DataError(f"{where}: question {qid}: answer {text!r} is not at answer_start {start} of its context "
                            f"(found {context[start:start + len(text)]!r}); fix answer_start")
        if not text.strip():
            raise DataError(f"{where}: question {qid} has an empty answer text")
        texts.append(text)
        starts.append(start)
    return QAExample(qid, question, context, tuple(texts), tuple(starts))


# -- tokens with character spans


def tokenize_with_spans(tokenizer: Any, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, char starts, char ends) of each text, from tensorflow-text's byte offsets."""
    import tensorflow as tf

    ids, begins, ends = tokenizer.tokenize_with_offsets(tf.constant(list(texts), dtype=tf.string))
    out = []
    for text, i, b, e in zip(texts, ids.to_list(), begins.to_list(), ends.to_list()):
        char_of_byte = np.repeat(np.arange(len(text) + 1), [len(c.encode("utf-8")) for c in text] + [1])
        out.append((np.asarray(i, np.int32), char_of_byte[np.asarray(b, np.int64)],
                    char_of_byte[np.asarray(e, np.int64)]))
    return out


@dataclasses.dataclass
class QAFeatures:
    """One row per window: the BERT inputs, the span labels, the example it came from, and each position's
    character span in that example's context (-1 outside the context)."""

    token_ids: np.ndarray
    segment_ids: np.ndarray
    padding_mask: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    example_index: np.ndarray
    char_spans: np.ndarray
    truncated_questions: int = 0

    def inputs(self) -> dict[str, np.ndarray]:
        return {"token_ids": self.token_ids, "segment_ids": self.segment_ids, "padding_mask": self.padding_mask}

    def __len__(self) -> int:
        return len(self.token_ids)


def window_starts(n_tokens: int, budget: int, stride: int) -> list[int]:
    """First token of each window of ``budget`` tokens, ``stride`` apart, the last reaching the end."""
    starts = [0]
    while starts[-1] + budget < n_tokens:
        starts.append(starts[-1] + min(stride, budget))
    return starts


def build_features(examples: Sequence[QAExample], tokenizer: Any, *, sequence_length: int, doc_stride: int,
                   max_query_length: int, cls_id: int, sep_id: int, pad_id: int, batch: int = 256) -> QAFeatures:
    """Windows and labels of every example (the first answer is the training target)."""
    rows: dict[str, list[Any]] = {k: [] for k in ("ids", "seg", "start", "end", "example", "spans")}
    truncated = 0
    for first in range(0, len(examples), batch):
        chunk = examples[first:first + batch]
        questions = tokenize_with_spans(tokenizer, [e.question for e in chunk])
        contexts = tokenize_with_spans(tokenizer, [e.context for e in chunk])
        for k, (example, (q_ids, _, _), (c_ids, c_begin, c_end)) in enumerate(zip(chunk, questions, contexts)):
            if len(q_ids) > max_query_length:
                truncated += 1
                q_ids = q_ids[:max_query_length]
            budget = sequence_length - len(q_ids) - 3
            if budget < 1:
                raise DataError(f"sequence_length={sequence_length} leaves no room for the context after a "
                                f"{len(q_ids)}-token question; raise it or lower max_query_length")
            answer = None
            if not example.impossible:
                s = example.answer_starts[0]
                e = s + len(example.answers[0])
                inside = np.nonzero((c_end > s) & (c_begin < e))[0]
                answer = (int(inside[0]), int(inside[-1])) if len(inside) else None
            offset = len(q_ids) + 2  # [CLS] question [SEP]
            for start in window_starts(len(c_ids), budget, doc_stride):
                piece = c_ids[start:start + budget]
                ids = np.full(sequence_length, pad_id, np.int32)
                ids[0], ids[1:offset - 1], ids[offset - 1] = cls_id, q_ids, sep_id
                ids[offset:offset + len(piece)] = piece
                ids[offset + len(piece)] = sep_id
                seg = np.zeros(sequence_length, np.int32)
                seg[offset:offset + len(piece) + 1] = 1
                spans = np.full((sequence_length, 2), -1, np.int32)
                spans[offset:offset + len(piece), 0] = c_begin[start:start + len(piece)]
                spans[offset:offset + len(piece), 1] = c_end[start:start + len(piece)]
                if answer is not None and start <= answer[0] and answer[1] < start + len(piece):
                    label = (answer[0] - start + offset, answer[1] - start + offset)
                else:
                    label = (0, 0)
                rows["ids"].append(ids)
                rows["seg"].append(seg)
                rows["start"].append(label[0])
                rows["end"].append(label[1])
                rows["example"].append(first + k)
                rows["spans"].append(spans)
    ids = np.stack(rows["ids"])
    return QAFeatures(ids, np.stack(rows["seg"]), (ids != pad_id).astype(np.int32),
                      np.asarray(rows["start"], np.int32), np.asarray(rows["end"], np.int32),
                      np.asarray(rows["example"], np.int32), np.stack(rows["spans"]), truncated)


@dataclasses.dataclass(frozen=True)
class WindowGrid:
    """:func:`window_grid`'s result: ``N = batch * windows`` rows, example-major."""

    ids: Any        # [N, L] int32: [CLS] question [SEP] context window [SEP] padding
    segments: Any   # [N, L] int32
    mask: Any       # [N, L] int32
    valid: Any      # [N] bool: a real window (grid cells past an example's own windows are not)
    in_c: Any       # [N, L] bool: the positions holding context tokens
    example: Any    # [N] int32: the row's example in the batch
    w_start: Any    # [N] int32: the window's first context token
    w_len: Any      # [N] int32: context tokens in the window
    offset: Any     # [N, 1] int32: the position of the window's first context token
    c_start: Any    # [B] int32: each example's first token in the flat context ids
    batch: Any      # B
    windows: Any    # W: the most windows any example of the batch needs


def window_grid(q_ids: Any, c_ids: Any, *, sequence_length: int, doc_stride: int, max_query_length: int,
                cls_id: int, sep_id: int, pad_id: int) -> WindowGrid:
    """The windows of :func:`build_features`, in TensorFlow ops, for a batch of ragged question and context
    token ids (``[B, None]``): the same rows in the same order once the invalid ones are dropped. Written
    with dense ops (no ragged helpers) so that the serving graph that uses it converts to TFLite."""
    import tensorflow as tf

    L = sequence_length
    q_splits, c_splits = tf.cast(q_ids.row_splits, tf.int32), tf.cast(c_ids.row_splits, tf.int32)
    q_start, c_start = q_splits[:-1], c_splits[:-1]
    q_len = tf.minimum(q_splits[1:] - q_start, max_query_length)
    c_len = c_splits[1:] - c_start
    n_windows, budget, step = _windows(q_len, c_len, L, doc_stride)
    batch = tf.shape(c_len)[0]
    W = tf.reduce_max(n_windows)
    grid = tf.range(W)[tf.newaxis, :] + tf.zeros_like(c_len)[:, tf.newaxis]   # [B, W]: window index
    valid = tf.reshape(grid < n_windows[:, tf.newaxis], [-1])                  # [N = B * W]
    example = tf.reshape(tf.range(batch)[:, tf.newaxis] + tf.zeros_like(grid), [-1])
    w_start = tf.reshape(grid * step[:, tf.newaxis], [-1])
    w_len = tf.maximum(tf.minimum(tf.gather(budget, example), tf.gather(c_len, example) - w_start), 0)
    wq = tf.gather(q_len, example)
    pos = tf.range(L)[tf.newaxis, :]
    offset = (wq + 2)[:, tf.newaxis]                                            # first context position
    end = offset + w_len[:, tf.newaxis]                                         # its [SEP]
    q_flat = tf.concat([tf.cast(q_ids.flat_values, tf.int32), [pad_id]], 0)
    c_flat = tf.concat([tf.cast(c_ids.flat_values, tf.int32), [pad_id]], 0)
    q_at = tf.gather(q_start, example)[:, tf.newaxis] + pos - 1
    c_at = (tf.gather(c_start, example) + w_start)[:, tf.newaxis] + pos - offset
    in_q = (pos >= 1) & (pos < offset - 1)
    in_c = (pos >= offset) & (pos < end)
    ids = tf.fill(tf.shape(c_at), pad_id)
    ids = tf.where(in_q, tf.gather(q_flat, tf.clip_by_value(q_at, 0, tf.size(q_flat) - 1)), ids)
    ids = tf.where(in_c, tf.gather(c_flat, tf.clip_by_value(c_at, 0, tf.size(c_flat) - 1)), ids)
    ids = tf.where((pos == offset - 1) | (pos == end), sep_id, ids)
    ids = tf.where(pos == 0, cls_id, ids)
    # tf.where, not a cast of the booleans: TFLite's converter has no bool zeros_like.
    segments = tf.where((pos >= offset) & (pos <= end), 1, 0)
    mask = tf.where(pos <= end, 1, 0)
    return WindowGrid(ids, segments, mask, valid, in_c, example, w_start, w_len, offset, c_start, batch, W)


def answer_bytes(example: QAExample) -> tuple[int, int]:
    """The first answer's byte offsets in the UTF-8 context, (-1, -1) for an unanswerable question: what
    :func:`training_windows` compares with the tokenizer's byte offsets (``build_features`` compares
    character offsets; both give the same tokens)."""
    if example.impossible:
        return -1, -1
    s = example.answer_starts[0]
    e = s + len(example.answers[0])
    return len(example.context[:s].encode("utf-8")), len(example.context[:e].encode("utf-8"))


def training_windows(questions: Any, contexts: Any, answer_begin: Any, answer_end: Any, tokenizer: Any, *,
                     sequence_length: int, doc_stride: int, max_query_length: int, cls_id: int, sep_id: int,
                     pad_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training rows :func:`build_features` makes, in TensorFlow ops, for a batch of examples
    (``[B]`` strings, ``[B]`` int32 answer byte offsets from :func:`answer_bytes`): ``(inputs, labels)``
    with one row per window, in build_features' order. What the training pipeline runs in tf.data, so no
    feature array of the whole dataset is ever held."""
    import tensorflow as tf

    q_ids = tokenizer.tokenize(questions)
    c_ids, c_begin, c_end = tokenizer.tokenize_with_offsets(contexts)
    g = window_grid(q_ids, c_ids, sequence_length=sequence_length, doc_stride=doc_stride,
                    max_query_length=max_query_length, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id)
    # The answer's first and last context token (as build_features: every token overlapping it).
    row = tf.cast(c_ids.value_rowids(), tf.int32)
    token = tf.range(tf.size(row, out_type=tf.int32)) - tf.gather(g.c_start, row)
    begin, end = tf.gather(answer_begin, row), tf.gather(answer_end, row)
    inside = (tf.cast(c_end.flat_values, tf.int32) > begin) & (tf.cast(c_begin.flat_values, tf.int32) < end) & (
        begin >= 0)
    big = tf.int32.max
    first = tf.math.unsorted_segment_min(tf.where(inside, token, big), row, g.batch)
    last = tf.math.unsorted_segment_max(tf.where(inside, token, -1), row, g.batch)
    a0, a1 = tf.gather(first, g.example), tf.gather(last, g.example)
    labelled = (a1 >= 0) & (a0 >= g.w_start) & (a1 < g.w_start + g.w_len)
    offset = g.offset[:, 0]
    start = tf.where(labelled, a0 - g.w_start + offset, 0)
    stop = tf.where(labelled, a1 - g.w_start + offset, 0)
    keep = lambda t: tf.boolean_mask(t, g.valid)  # noqa: E731
    return ({"token_ids": keep(g.ids), "segment_ids": keep(g.segments), "padding_mask": keep(g.mask)},
            {"start_logits": keep(start), "end_logits": keep(stop)})


def window_counts(questions: Any, contexts: Any, tokenizer: Any, *, sequence_length: int, doc_stride: int,
                  max_query_length: int) -> tuple[Any, Any]:
    """Windows per example and whether its question is cut, in TensorFlow ops (the counting pass)."""
    import tensorflow as tf

    q_len = tf.cast(tokenizer.tokenize(questions).row_lengths(), tf.int32)
    c_len = tf.cast(tokenizer.tokenize(contexts).row_lengths(), tf.int32)
    n_windows, _, _ = _windows(tf.minimum(q_len, max_query_length), c_len, sequence_length, doc_stride)
    return n_windows, q_len > max_query_length


def _windows(q_len: Any, c_len: Any, sequence_length: int, doc_stride: int) -> tuple[Any, Any, Any]:
    """(windows, context tokens per window, tokens between window starts) per example: window_starts' count."""
    import tensorflow as tf

    budget = tf.maximum(sequence_length - q_len - 3, 1)
    step = tf.minimum(doc_stride, budget)
    return 1 + tf.maximum(0, (c_len - budget + step - 1) // step), budget, step


# -- answers back from logits


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    score: float        # start + end logit of the chosen span (or of [CLS] for no answer)
    start: int          # character offsets in the context; -1 for no answer
    end: int


def best_answers(examples: Sequence[QAExample], features: QAFeatures, start_logits: np.ndarray,
                 end_logits: np.ndarray, *, max_answer_length: int = 30,
                 null_threshold: float | None = None) -> list[Answer]:
    """The best span of each example over all its windows: the highest start + end logit over every pair
    of context tokens with end >= start and at most ``max_answer_length`` tokens (an exhaustive search,
    so the exported graph, which does the same, agrees exactly; the first window wins a tie). With
    ``null_threshold`` (SQuAD 2.0) the answer is empty when the best [CLS] score (start + end logit at
    position 0, lowest over the windows) beats the best span's score by more than the threshold."""
    best: dict[int, Answer] = {}
    null: dict[int, float] = {}
    length = start_logits.shape[1]
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    allowed = (j >= i) & (j - i < max_answer_length)
    for f in range(len(features)):
        ex = int(features.example_index[f])
        spans = features.char_spans[f]
        s_log, e_log = start_logits[f].astype(np.float32), end_logits[f].astype(np.float32)
        null[ex] = min(null.get(ex, np.inf), float(s_log[0] + e_log[0]))
        valid = spans[:, 0] >= 0
        scores = np.where(allowed & valid[:, None] & valid[None, :], s_log[:, None] + e_log[None, :], -np.inf)
        flat = int(np.argmax(scores))
        a, b = divmod(flat, length)
        if np.isfinite(scores[a, b]) and (ex not in best or scores[a, b] > best[ex].score):
            c0, c1 = int(spans[a, 0]), int(spans[b, 1])
            best[ex] = Answer(examples[ex].context[c0:c1], float(scores[a, b]), c0, c1)
    out = []
    for ex in range(len(examples)):
        answer = best.get(ex, Answer("", null.get(ex, 0.0), -1, -1))
        if null_threshold is not None and ex in null and null[ex] - answer.score > null_threshold:
            answer = Answer("", null[ex], -1, -1)
        out.append(answer)
    return out
