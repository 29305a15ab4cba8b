"""Seq2seq decoding and training speed, measured side by side in one process.

1. Greedy decoding tokens/second with the key/value cache vs without (the whole decoder re-run
   for every token), batch 1 and batch 32.
2. Time per generated token with the cache at 16, 64 and 256 generated tokens (the end token is
   disabled so every row generates exactly that many): flat means each token costs one step. The
   counts are timed in alternating rounds and compared within each round (median of the ratios).
3. XLA-compiled vs plain graph decoding for greedy, beam (width 4) and top-k sampling, batch 1 and 32:
   the figures behind the Translator's default (XLA on).
4. The zoo's greedy decoding (its default, XLA) vs keras-hub's own seq2seq generation: a
   ``keras_hub.models.BartSeq2SeqLM`` built from scratch at the same size (layers, width, heads,
   feed-forward, vocabulary), its ``generate`` with the greedy sampler (keras-hub compiles it with
   XLA by default), tokens/s at batch 1 and 32.
5. Training step time float32 vs mixed_bfloat16.

    python benchmarks/seq2seq.py [--preset transformer_small] [--vocab 8000] [--source-length 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import median_step_seconds  # noqa: E402

START, END, PAD = 2, 3, 0


def decode_fn(model, batch: int, source_length: int, tokens: int, use_cache: bool, xla: bool,
              method: str = "greedy") -> tuple:
    """``(fn, ids, mask)``: a traced, warmed-up decoding function generating exactly ``tokens`` tokens
    (end_id -1 never matches) for ``batch`` random sources."""
    import numpy as np
    import tensorflow as tf

    from zoo.models import decoding

    cfg = decoding.DecodeConfig(method=method, max_length=tokens, use_cache=use_cache)
    ids = tf.constant(np.random.default_rng(0).integers(5, model.config.vocab_size, (batch, source_length)), tf.int32)
    mask = tf.ones_like(ids)
    fn = tf.function(lambda i, m: decoding.generate(model, i, m, START, -1, PAD, cfg), jit_compile=xla)
    fn(ids, mask).numpy()
    return fn, ids, mask


def decode_seconds(model, batch: int, source_length: int, tokens: int, use_cache: bool, runs: int,
                   xla: bool = False, method: str = "greedy") -> float:
    """Wall time of generating ``tokens`` tokens for ``batch`` sources (graph-compiled, warmed up): the
    fastest of ``runs``, since a shared VM's noise only ever adds time."""
    import numpy as np

    fn, ids, mask = decode_fn(model, batch, source_length, tokens, use_cache, xla, method)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(ids, mask).numpy()
        times.append(time.perf_counter() - t)
    return float(np.min(times))


def per_token_paired(model, source_length: int, token_counts: tuple[int, ...], xla: bool,
                     rounds: int) -> tuple[list[float], list[float]]:
    """ms per generated token (batch 1, cached) for each count, fastest over ``rounds``, and each
    count's per-token time over the first count's, the median over rounds of the ratio within a
    round: every count is timed once per round, so a slow spell of the VM hits all of them alike."""
    import numpy as np

    fns = [decode_fn(model, 1, source_length, tokens, True, xla) for tokens in token_counts]
    per = [[] for _ in token_counts]
    for _ in range(rounds):
        for k, (tokens, (fn, ids, mask)) in enumerate(zip(token_counts, fns)):
            t = time.perf_counter()
            fn(ids, mask).numpy()
            per[k].append((time.perf_counter() - t) / tokens * 1e3)
    ratios = [float(np.median([a / b for a, b in zip(p, per[0])])) for p in per]
    return [float(np.min(p)) for p in per], ratios


def keras_hub_bart(model):
    """keras-hub's BART seq2seq LM, from scratch, at the zoo model's size, greedy sampler."""
    import keras_hub

    cfg = model.config
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=cfg.vocab_size, num_layers=cfg.num_encoder_layers, num_heads=cfg.num_heads,
        hidden_dim=cfg.hidden_dim, intermediate_dim=cfg.intermediate_dim, dropout=0.0,
        max_sequence_length=cfg.max_target_length)
    lm = keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    return lm


def keras_hub_decode_seconds(lm, batch: int, source_length: int, tokens: int, runs: int) -> float:
    """Wall time (fastest of ``runs``) of keras-hub ``generate`` producing ``tokens`` tokens (no stop
    token) for ``batch`` sources."""
    import numpy as np

    rng = np.random.default_rng(0)
    decoder = np.full((batch, tokens + 1), PAD, "int32")
    decoder[:, 0] = START
    inputs = {"encoder_token_ids": rng.integers(5, lm.backbone.vocabulary_size, (batch, source_length)).astype("int32"),
              "encoder_padding_mask": np.ones((batch, source_length), "int32"),
              "decoder_token_ids": decoder, "decoder_padding_mask": (decoder != PAD).astype("int32")}
    lm.generate(inputs, stop_token_ids=None)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = lm.generate(inputs, stop_token_ids=None)
        times.append(time.perf_counter() - t)
    assert out["decoder_token_ids"].shape == (batch, tokens + 1)
    return float(np.min(times))


def train_step_seconds(preset: str, vocab: int, batch: int, length: int, precision: str, steps: int,
                       **overrides: Any) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from zoo.losses import LabelSmoothedCrossEntropy
    from zoo.recipes.engine.optim import OptimizerConfig, build_optimizer
    from zoo.recipes.engine.precision import precision_scope

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = batch * 2
    src = rng.integers(5, vocab, (n, length)).astype("int32")
    tgt = rng.integers(5, vocab, (n, length)).astype("int32")
    x = {"encoder_token_ids": src, "encoder_padding_mask": np.ones_like(src),
         "decoder_token_ids": tgt, "decoder_padding_mask": np.ones_like(tgt)}
    ds = tf.data.Dataset.from_tensor_slices((x, tgt, np.ones_like(tgt, "float32"))).repeat().batch(batch)
    with precision_scope(precision):
        model = zoo.build(preset, vocab_size=vocab, max_source_length=length, max_target_length=length, **overrides)
        model.compile(optimizer=build_optimizer(OptimizerConfig(name="adam", learning_rate=1e-4)),
                      loss=LabelSmoothedCrossEntropy(0.1))
    return median_step_seconds(model, ds, steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="transformer_small")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--source-length", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens for the cache vs no-cache rows")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--quick", action="store_true",
                        help="transformer_tiny with 1+1 layers, small vocabulary, one run each")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.vocab, args.tokens, args.runs, args.steps, args.train_batch = \
            "transformer_tiny", 500, 16, 1, 2, 8
    import zoo

    # quick (a smoke test): one encoder and one decoder layer halve every graph's tracing and XLA compile
    layers = {"num_encoder_layers": 1, "num_decoder_layers": 1} if args.quick else {}
    model = zoo.build(args.preset, vocab_size=args.vocab, max_source_length=256, max_target_length=256,
                      dropout=0.0, **layers)
    out = {"preset": args.preset + (" (1+1 layers)" if layers else ""), "vocab": args.vocab,
           "source_length": args.source_length, "decode": [], "per_token": [], "train": []}
    print(f"{args.preset}, vocab {args.vocab}, source length {args.source_length}, greedy, "
          f"{args.tokens} generated tokens, fastest of {args.runs}")
    print(f"{'batch':>5}  {'cached tok/s':>12}  {'uncached tok/s':>14}  {'speed-up':>8}")
    for batch in (1, 32):
        cached = decode_seconds(model, batch, args.source_length, args.tokens, True, args.runs)
        full = decode_seconds(model, batch, args.source_length, args.tokens, False, args.runs)
        row = {"batch": batch, "cached_tokens_per_s": batch * args.tokens / cached,
               "uncached_tokens_per_s": batch * args.tokens / full, "speedup": full / cached}
        out["decode"].append(row)
        print(f"{batch:>5}  {row['cached_tokens_per_s']:>12.1f}  {row['uncached_tokens_per_s']:>14.1f}  "
              f"{row['speedup']:>7.2f}x")
    print(f"\n{'tokens':>6}  {'cached ms/token':>15}  {'vs 16':>6}  {'XLA ms/token':>12}  {'vs 16':>6}   (batch 1)")
    counts = (16, 32) if args.quick else (16, 64, 256)
    rounds = 2 if args.quick else 3 * args.runs
    graph_ms, graph_vs = per_token_paired(model, args.source_length, counts, False, rounds)
    xla_ms, xla_vs = per_token_paired(model, args.source_length, counts, True, rounds)
    for k, tokens in enumerate(counts):
        out["per_token"].append({"tokens": tokens, "ms_per_token": graph_ms[k], "vs_16": graph_vs[k],
                                 "xla_ms_per_token": xla_ms[k], "xla_vs_16": xla_vs[k]})
        print(f"{tokens:>6}  {graph_ms[k]:>15.3f}  {graph_vs[k]:>6.2f}  {xla_ms[k]:>12.3f}  {xla_vs[k]:>6.2f}")
    methods = ("greedy", "beam", "top_k")
    xla_tokens = 16 if args.quick else 32
    print(f"\nXLA vs plain graph, {xla_tokens} tokens: ms per token")
    print(f"{'method':<7} {'batch':>5}  {'graph':>8}  {'XLA':>8}  {'XLA/graph':>9}")
    out["xla"] = []
    for method in methods:
        for batch in ((32,) if args.quick else (1, 32)):  # quick: one compile per method and side
            plain = decode_seconds(model, batch, args.source_length, xla_tokens, True, args.runs, method=method)
            xla = decode_seconds(model, batch, args.source_length, xla_tokens, True, args.runs, xla=True,
                                 method=method)
            out["xla"].append({"method": method, "batch": batch, "ms_per_token": plain / xla_tokens * 1e3,
                               "xla_ms_per_token": xla / xla_tokens * 1e3, "xla_vs_graph": xla / plain})
            print(f"{method:<7} {batch:>5}  {plain / xla_tokens * 1e3:>8.2f}  {xla / xla_tokens * 1e3:>8.2f}  "
                  f"{xla / plain:>9.2f}")
    lm = keras_hub_bart(model)
    print(f"\nzoo greedy (XLA) vs keras-hub BartSeq2SeqLM.generate (greedy), {args.tokens} tokens: tokens/s")
    out["keras_hub"] = []
    for batch in (1, 32):
        zoo_s = decode_seconds(model, batch, args.source_length, args.tokens, True, args.runs, xla=True)
        kh_s = keras_hub_decode_seconds(lm, batch, args.source_length, args.tokens, args.runs)
        row = {"batch": batch, "zoo_tokens_per_s": batch * args.tokens / zoo_s,
               "keras_hub_tokens_per_s": batch * args.tokens / kh_s, "zoo_vs_keras_hub": kh_s / zoo_s}
        out["keras_hub"].append(row)
        print(f"batch {batch:>2}: zoo {row['zoo_tokens_per_s']:.0f}, keras-hub {row['keras_hub_tokens_per_s']:.0f}, "
              f"{row['zoo_vs_keras_hub']:.2f}x")
    print(f"\ntraining step, batch {args.train_batch}, length {args.train_length} (source and target)")
    f32 = None
    for precision in ("float32", "mixed_bfloat16"):
        s = train_step_seconds(args.preset, args.vocab, args.train_batch, args.train_length, precision, args.steps,
                               **layers)
        f32 = f32 or s
        out["train"].append({"precision": precision, "seconds": s, "vs_float32": s / f32})
        print(f"{precision:<15} {s:.3f} s/step  {s / f32:.2f}x")
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "seq2seq.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
