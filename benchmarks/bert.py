"""BERT classifier training step time: the zoo's bert_classify model vs keras-hub's BertTextClassifier.

Same architecture, batch and sequence length, measured side by side in one process; XLA on and off;
float32 and mixed_bfloat16 (with and without XLA: XLA's CPU backend skips the bfloat16 matmul kernels).
Ratios are the zoo's time over keras-hub's (below 1 = faster). Each side
trains with its own stack's AdamW: the zoo's recipe optimizer (fused update) and ``keras.optimizers.AdamW``
for keras-hub; the ``model only`` row gives both Keras' AdamW to separate model from optimizer.

The same run times a large float32 (and bfloat16) matmul, the machine's practical ceiling, and
counts a training step's FLOPs from the config (forward matmuls of every layer, times 3 for the
backward pass), so each row also says what fraction of that ceiling the step reaches. The zoo's
classifier runs its last encoder layer for [CLS] only (``zoo.models.encoder``); its FLOP count
says so, keras-hub's step computes the whole last layer. It also times the step's own matmuls
without the rest of the step (:func:`own_matmul_seconds`): the FLOP/s a step of these shapes could
reach if everything else were free, and the matmuls' share of each step.

    python benchmarks/bert.py [--preset bert_base] [--batch 8] [--length 128] [--steps 6] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import paired_ratio, paired_step_seconds  # noqa: E402


def build(kind: str, cfg, num_classes: int = 2):
    if kind == "zoo":
        from zoo.models.bert import BertClassifier, build_bert

        return BertClassifier(build_bert(cfg), num_classes=num_classes)
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=cfg.vocab_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        hidden_dim=cfg.hidden_dim, intermediate_dim=cfg.intermediate_dim, dropout=cfg.dropout,
        max_sequence_length=cfg.max_sequence_length)
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=num_classes, preprocessor=None)


def optimizer(kind: str, fused: bool):
    import keras

    from zoo.recipes.engine.optim import OptimizerConfig, build_optimizer

    if kind == "zoo" and fused:
        return build_optimizer(OptimizerConfig(name="adamw", learning_rate=2e-5, weight_decay=0.004))
    return keras.optimizers.AdamW(2e-5)  # weight_decay 0.004, Keras' default


def compiled_case(kind: str, cfg, batch: int, length: int, precision: str, xla: bool, fused: bool = True):
    """``(model, dataset)``: one side of a comparison, compiled and ready to time."""
    import keras
    import numpy as np
    import tensorflow as tf

    from zoo.recipes.engine.precision import precision_scope

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(5, cfg.vocab_size, (batch * 2, length)).astype("int32"),
         "segment_ids": np.zeros((batch * 2, length), "int32"), "padding_mask": np.ones((batch * 2, length), "int32")}
    y = rng.integers(0, 2, batch * 2).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(2)
    with precision_scope(precision):
        model = build(kind, cfg)
        model.compile(optimizer=optimizer(kind, fused), jit_compile=xla,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, ds


def matmul_gflops(n: int, dtype: str, runs: int = 10) -> float:
    """GFLOP/s of an ``n x n`` by ``n x n`` matmul: the fastest of ``runs`` after one untimed call
    (a ceiling, so the best the machine showed, not a typical run on a shared VM)."""
    import time

    import numpy as np
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    fn = tf.function(lambda x: tf.matmul(x, x))
    fn(a).numpy()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(a).numpy()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.min(times)) / 1e9


Matmul = tuple[int, int, int, int, bool, bool]  # (batch, m, k, n, transpose_a, transpose_b)


def step_matmul_groups(cfg, batch: int, length: int) -> list[tuple[Matmul, ...]]:
    """The matmuls of the zoo classifier's training step, grouped as autodiff issues them: per dense
    projection the forward ``x W`` with the backward ``dy W^T`` and ``x^T dy``; per attention product
    (``q k^T``, ``p v``) the forward batched matmul and its two gradients. The last layer works on
    [CLS] only (keys and values for every token). Their FLOPs sum to :func:`train_step_gflop`."""
    h, i, n = cfg.hidden_dim, cfg.intermediate_dim, cfg.num_heads
    d, heads, tokens = h // n, batch * n, batch * length

    def dense(rows: int, k: int, out: int) -> tuple[Matmul, ...]:
        return (1, rows, k, out, False, False), (1, rows, out, k, False, True), (1, k, rows, out, True, False)

    def attention(queries: int) -> list[tuple[Matmul, ...]]:
        scores = ((heads, queries, d, length, False, True), (heads, queries, length, d, False, False),
                  (heads, length, queries, d, True, False))
        context = ((heads, queries, length, d, False, False), (heads, queries, d, length, False, True),
                   (heads, length, queries, d, True, False))
        return [scores, context]

    full = [dense(tokens, h, 3 * h), dense(tokens, h, h), dense(tokens, h, i), dense(tokens, i, h), *attention(length)]
    last = [dense(tokens, h, 2 * h), dense(batch, h, h), dense(batch, h, h), dense(batch, h, i), dense(batch, i, h),
            *attention(1)]
    return full * (cfg.num_layers - 1) + last


def own_matmul_seconds(groups: list[tuple[Matmul, ...]], dtype: str, runs: int = 5) -> float:
    """Seconds the step's matmuls take without the rest of the step: each group (a projection's
    forward and two gradient matmuls, which TensorFlow may run side by side as in the step) timed
    alone, fastest of ``runs``, times how often the step has it. The step's time if everything else
    (element-wise ops, softmax, dropout, optimizer) were free: what bounds its FLOP/s at these shapes."""
    import time
    from collections import Counter

    import numpy as np
    import tensorflow as tf

    def operands(b: int, m: int, k: int, n: int, ta: bool, tb: bool) -> tuple[Any, Any]:
        return (tf.cast(tf.random.normal((b, k, m) if ta else (b, m, k)), dtype),
                tf.cast(tf.random.normal((b, n, k) if tb else (b, k, n)), dtype))

    total = 0.0
    for group, count in Counter(groups).items():
        inputs = [operands(*shape) for shape in group]
        flags = [shape[4:] for shape in group]
        fn = tf.function(lambda pairs, flags=flags: [tf.matmul(x, y, transpose_a=ta, transpose_b=tb)
                                                     for (x, y), (ta, tb) in zip(pairs, flags)])
        [out.numpy() for out in fn(inputs)]
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            [out.numpy() for out in fn(inputs)]
            times.append(time.perf_counter() - t)
        total += count * float(np.min(times))
    return total


def train_step_gflop(cfg, batch: int, length: int, pooled_only: bool = True) -> float:
    """FLOPs the zoo classifier's training step does: per token and layer the Q/K/V/output
    projections (4 H^2) and the feed-forward (2 H I) multiply-adds, the attention scores and their
    weighted sum (2 L H), twice for FLOPs; the backward pass is about twice the forward. With
    ``pooled_only`` (the classifier reads [CLS]) the last layer computes keys and values for every
    token but queries, output projection and feed-forward for [CLS] alone: counted as done, not as
    the full layer would be, so skipped work never inflates the FLOP/s."""
    h, i = cfg.hidden_dim, cfg.intermediate_dim
    full_layer = length * (4 * h * h + 2 * h * i + 2 * length * h)
    cls_layer = length * 2 * h * h + (2 * h * h + 2 * h * i + 2 * length * h)
    layers = (cfg.num_layers - 1) * full_layer + (cls_layer if pooled_only else full_layer)
    return 3 * 2 * batch * layers / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bert_small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model and round")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--quick", action="store_true", help="bert_tiny with one layer, batch 4, length 32, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.batch, args.length, args.steps = "bert_tiny", 4, 32, 2
    import zoo

    cfg = zoo.make_config(args.preset)
    if args.quick:  # a smoke test: one layer halves the ten graphs' tracing and XLA compiles
        import dataclasses

        cfg = dataclasses.replace(cfg, num_layers=1)
        args.preset += " (1 layer)"
    ceiling = {"float32": matmul_gflops(512 if args.quick else 2048, "float32"),
               "bfloat16": matmul_gflops(512 if args.quick else 2048, "bfloat16")}
    step_gflop = train_step_gflop(cfg, args.batch, args.length)
    groups = step_matmul_groups(cfg, args.batch, args.length)
    group_gflop = sum(2 * b * m * k * n for group in groups for b, m, k, n, _, _ in group) / 1e9
    assert abs(group_gflop - step_gflop) < 1e-6 * step_gflop, (group_gflop, step_gflop)
    own = {"float32": own_matmul_seconds(groups, "float32"), "bfloat16": own_matmul_seconds(groups, "bfloat16")}
    cases = (("float32", False, True), ("float32", True, True), ("mixed_bfloat16", False, True),
             ("mixed_bfloat16", True, True), ("float32", False, False))
    compiled = {(kind, *case): compiled_case(kind, cfg, args.batch, args.length, *case)
                for case in cases for kind in ("zoo", "keras_hub")}
    # Every model is timed in each of several alternating rounds: ratios are medians of per-round
    # ratios, so a shared VM's slow spell (step times here drift by 30% over minutes) cancels out.
    times, per_round = paired_step_seconds(compiled, args.steps, rounds=1 if args.quick else 5)
    rows = []
    for case in cases:
        precision, xla, fused = case
        rows.append({"precision": precision, "xla": xla, "optimizer": "own" if fused else "model only",
                     "zoo_s": times[("zoo", *case)], "keras_hub_s": times[("keras_hub", *case)],
                     "zoo_vs_keras_hub": paired_ratio(per_round, ("zoo", *case), ("keras_hub", *case))})
    base = ("zoo", *cases[0])
    for r, case in zip(rows, cases):
        r["zoo_vs_zoo_float32"] = paired_ratio(per_round, ("zoo", *case), base)
        r["zoo_gflops"] = step_gflop / r["zoo_s"]
        r["zoo_vs_float32_matmul"] = r["zoo_gflops"] / ceiling["float32"]
        # the step's own matmuls, alone, over the whole step: the share of the step that is matmul
        r["own_matmuls_vs_step"] = own["bfloat16" if "bfloat16" in r["precision"] else "float32"] / r["zoo_s"]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bert.json"), "w") as fh:
        json.dump({"preset": args.preset, "batch": args.batch, "length": args.length, "rows": rows,
                   "step_gflop": step_gflop, "matmul_gflops": ceiling, "own_matmul_seconds": own,
                   "own_matmul_vs_float32_matmul": step_gflop / own["float32"] / ceiling["float32"],
                   "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}, fh, indent=2)
    print(f"matmul ceiling: {ceiling['float32']:.0f} GFLOP/s float32, {ceiling['bfloat16']:.0f} bfloat16; "
          f"{step_gflop:.1f} GFLOP per training step")
    print(f"the step's own matmuls alone: {own['float32']:.3f} s float32 ({step_gflop / own['float32']:.0f} GFLOP/s, "
          f"{step_gflop / own['float32'] / ceiling['float32']:.2f} of the float32 matmul rate), "
          f"{own['bfloat16']:.3f} s bfloat16")
    print(f"{args.preset}, batch {args.batch}, length {args.length}, AdamW, "
          f"{args.steps} steps per model in each of the alternating rounds")
    print(f"{'precision':<15} {'xla':<5} {'optimizer':<11} {'zoo s/step':>11} {'keras-hub':>10} {'zoo/kh':>7} "
          f"{'zoo vs f32':>11}")
    for r in rows:
        print(f"{r['precision']:<15} {str(r['xla']):<5} {r['optimizer']:<11} {r['zoo_s']:>11.3f} "
              f"{r['keras_hub_s']:>10.3f} "
              f"{r['zoo_vs_keras_hub']:>7.2f} {r['zoo_vs_zoo_float32']:>11.2f}  "
              f"{r['zoo_vs_float32_matmul']:.2f} of matmul, own matmuls {r['own_matmuls_vs_step']:.2f} of the step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
