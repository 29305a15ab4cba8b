"""Autoregressive decoding for the seq2seq Transformer: greedy, beam search, top-k and top-p sampling.

Every method is a ``tf.while_loop`` over a fixed-size token buffer, so it runs in a
``tf.function``, under XLA (``jit_compile=True``) and inside an exported SavedModel. With the
cache (the default) each new token costs one decoder step: ``model.decode_step`` reads the keys
and values of earlier positions from the cache. ``use_cache=False`` re-runs the whole decoder on
the buffer for every token (the causal mask keeps later, not yet written positions from
mattering): the reference the cached path is tested against, and the baseline of the benchmark.

Beam search keeps ``beam_width`` hypotheses per example. A hypothesis that emitted the end token
is frozen (it is extended with padding at no cost) and keeps its slot; decoding stops once every
hypothesis of every example has ended. The winner maximises ``log p / lp(length)`` with the GNMT
length penalty ``lp = ((5 + length) / 6) ** length_penalty`` (Wu et al. 2016; 0 = no penalty).
Width 1 is greedy decoding, token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo.config import check_choice, check_range
from zoo.errors import ConfigError

METHODS = ("greedy", "beam", "top_k", "top_p")


@dataclass(frozen=True)
class DecodeConfig:
    """How to generate. ``max_length`` counts generated tokens (end token included); 0 = the model's limit."""

    method: str = "greedy"
    beam_width: int = 4
    length_penalty: float = 0.6
    top_k: int = 40
    top_p: float = 0.9
    temperature: float = 1.0
    max_length: int = 0
    seed: int = 0
    use_cache: bool = True

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_range("beam_width", self.beam_width, 1)
        check_range("length_penalty", self.length_penalty, 0.0)
        check_range("top_k", self.top_k, 1)
        check_range("top_p", self.top_p, 0.0, 1.0, low_inclusive=False)
        check_range("temperature", self.temperature, 0.0, low_inclusive=False)
        check_range("max_length", self.max_length, 0)


def decode_config(**options: Any) -> DecodeConfig:
    """A DecodeConfig from keyword options, with a clear error for unknown or bad ones."""
    known = DecodeConfig.__dataclass_fields__
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown decoding option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return DecodeConfig(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad decoding option: {exc}") from exc


class _Stepper:
    """Next-token logits from the model, with or without the key/value cache."""

    def __init__(self, model: Any, encoded: Any, encoder_mask: Any, buffer_length: int, use_cache: bool):
        self.model, self.use_cache, self.length = model, use_cache, buffer_length
        self.encoded, self.encoder_mask = encoded, encoder_mask

    def start(self, tokens: Any) -> tuple[Any, Any]:
        if self.use_cache:
            return self.model.start_decoding(tokens[:, :1], self.encoded, self.encoder_mask, self.length)
        state = (self.encoded, self.encoder_mask)
        return self.step(tokens, 0, state)

    def step(self, tokens: Any, index: Any, state: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        if self.use_cache:  # a fixed-size slice (XLA needs the size at compile time)
            return self.model.decode_step(tf.slice(tokens, tf.stack([0, index]), [-1, 1]), state, index)
        logits = self.model.decode_full(tokens[:, :self.length], *state)
        return tf.gather(logits, index, axis=1), state


def _write_column(tokens: Any, index: Any, values: Any) -> Any:
    import tensorflow as tf

    column = tf.range(tf.shape(tokens)[1]) == index
    return tf.where(column[tf.newaxis, :], values[:, tf.newaxis], tokens)


def generate(model: Any, encoder_ids: Any, encoder_mask: Any, start_id: int, end_id: int, pad_id: int,
             config: DecodeConfig) -> Any:
    """Token ids ``[batch, max_length]`` generated for a batch of sources (no start token; padded after end)."""
    import tensorflow as tf

    limit = model.config.max_target_length
    max_length = config.max_length or limit
    if max_length > limit:
        raise ConfigError(f"max_length={max_length} exceeds the model's max_target_length={limit}")
    encoder_ids = tf.convert_to_tensor(encoder_ids, tf.int32)
    encoder_mask = tf.convert_to_tensor(encoder_mask, tf.int32)
    encoded = model.encode(encoder_ids, encoder_mask, training=False)
    batch = tf.shape(encoder_ids)[0]
    if config.method == "beam":
        return _beam(model, encoded, encoder_mask, batch, start_id, end_id, pad_id, max_length, config)
    stepper = _Stepper(model, encoded, encoder_mask, max_length, config.use_cache)
    tokens = tf.concat([tf.fill([batch, 1], start_id), tf.fill([batch, max_length], pad_id)], axis=1)
    # position i of the buffer is the decoder's input at step i; its output is written at i + 1.

    def choose(logits: Any, index: Any) -> Any:
        if config.method == "greedy":
            return tf.argmax(logits, axis=-1, output_type=tf.int32)
        return _sample(logits, index, config)

    logits, state = stepper.start(tokens)
    first = choose(logits, 0)
    tokens = _write_column(tokens, 1, first)
    finished = tf.equal(first, end_id)

    def cond(index, tokens, state, finished):
        return tf.logical_and(index < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(index, tokens, state, finished):
        logits, state = stepper.step(tokens, index, state)
        token = tf.where(finished, pad_id, choose(logits, index))
        tokens = _write_column(tokens, index + 1, token)
        return index + 1, tokens, state, tf.logical_or(finished, tf.equal(token, end_id))

    _, tokens, _, _ = tf.while_loop(cond, body, (tf.constant(1), tokens, state, finished),
                                    maximum_iterations=max_length - 1)
    return tokens[:, 1:]


def _sample(logits: Any, index: Any, config: DecodeConfig) -> Any:
    """One token per row from top-k or nucleus (top-p) filtered, temperature-scaled logits."""
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32) / config.temperature
    vocab = tf.shape(logits)[-1]
    if config.method == "top_k":
        k = tf.minimum(config.top_k, vocab)
        kth = tf.math.top_k(logits, k=k).values[:, -1:]
        logits = tf.where(logits < kth, -1e9, logits)
    else:
        order = tf.argsort(logits, axis=-1, direction="DESCENDING")
        sorted_logits = tf.gather(logits, order, batch_dims=1)
        probs = tf.nn.softmax(sorted_logits)
        before = tf.cumsum(probs, axis=-1, exclusive=True)  # mass of the tokens ranked above
        keep_sorted = before < config.top_p  # the top token always stays
        keep = tf.scatter_nd(tf.stack([tf.repeat(tf.range(tf.shape(order)[0]), vocab), tf.reshape(order, [-1])], 1),
                             tf.reshape(keep_sorted, [-1]), tf.shape(order, out_type=tf.int32))
        logits = tf.where(keep, logits, -1e9)
    seed = tf.stack([tf.constant(config.seed, tf.int32), tf.cast(index, tf.int32)])
    return tf.cast(tf.random.stateless_categorical(logits, 1, seed=seed)[:, 0], tf.int32)


def _beam(model: Any, encoded: Any, encoder_mask: Any, batch: Any, start_id: int, end_id: int, pad_id: int,
          max_length: int, config: DecodeConfig) -> Any:
    import tensorflow as tf

    width = config.beam_width
    stepper = _Stepper(model, encoded, encoder_mask, max_length, config.use_cache)
    tokens = tf.concat([tf.fill([batch, 1], start_id), tf.fill([batch, max_length], pad_id)], axis=1)
    logits, state = stepper.start(tokens)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))  # [batch, vocab]
    vocab = tf.shape(log_probs)[-1]
    # The first step has one distinct hypothesis per example: its best `width` tokens start the beams.
    scores, first = tf.math.top_k(log_probs, k=width)  # [batch, width]
    scores = tf.reshape(scores, [-1])
    first = tf.reshape(first, [-1])

    def tile(x: Any) -> Any:
        return tf.repeat(x, width, axis=0)

    tokens = _write_column(tile(tokens), 1, first)
    state = tf.nest.map_structure(tile, state)
    finished = tf.equal(first, end_id)
    lengths = tf.ones_like(first)
    frozen_row = tf.where(tf.range(vocab) == pad_id, 0.0, -1e9)  # an ended hypothesis: pad at no cost

    def cond(index, tokens, state, scores, finished, lengths):
        return tf.logical_and(index < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(index, tokens, state, scores, finished, lengths):
        entered = (tokens, state, scores, finished, lengths)
        logits, state = stepper.step(tokens, index, state)
        step_lp = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        step_lp = tf.where(finished[:, tf.newaxis], frozen_row[tf.newaxis, :], step_lp)
        candidates = tf.reshape(scores[:, tf.newaxis] + step_lp, [batch, width * vocab])
        best, flat = tf.math.top_k(candidates, k=width)
        parent = tf.reshape(flat // vocab + tf.range(batch)[:, tf.newaxis] * width, [-1])
        token = tf.reshape(flat % vocab, [-1])
        tokens = _write_column(tf.gather(tokens, parent), index + 1, token)
        state = tf.nest.map_structure(lambda x: tf.gather(x, parent), state)
        was_finished = tf.gather(finished, parent)
        lengths = tf.gather(lengths, parent) + tf.cast(tf.logical_not(was_finished), tf.int32)
        finished = tf.logical_or(was_finished, tf.equal(token, end_id))
        out = (tokens, state, tf.reshape(best, [-1]), finished, lengths)
        # The gathers lose a static batch size (a tf.function traced for concrete shapes has one);
        # the loop needs the shapes it entered with.
        tf.nest.map_structure(lambda new, old: new.set_shape(old.shape), out, entered)
        return index + 1, *out

    _, tokens, _, scores, _, lengths = tf.while_loop(
        cond, body, (tf.constant(1), tokens, state, scores, finished, lengths), maximum_iterations=max_length - 1)
    penalty = tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, config.length_penalty)
    normalized = tf.reshape(scores / penalty, [batch, width])
    best = tf.argmax(normalized, axis=-1, output_type=tf.int32) + tf.range(batch) * width
    return tf.gather(tokens, best)[:, 1:]
