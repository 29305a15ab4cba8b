"""Benchmarks (`make bench`): training step time by precision / XLA, and export latency and size.

Everything is measured side by side in one run and reported as ratios to the float32 baseline,
so the numbers compare on any machine; also the recipe's input pipeline against cached batches.
Results go to bench-out/training.json and the terminal (benchmarks/all.py gathers every benchmark).

    python benchmarks/run.py [--steps 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import median_step_seconds, paired_ratio, paired_step_seconds  # noqa: E402


def time_training(model_name: str, overrides: dict, shape: tuple, classes: int, batch: int, steps: int,
                  precision: str, jit: bool) -> float:
    """Seconds per training step (median), after warm-up steps."""
    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from zoo.recipes.engine.precision import precision_scope

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * 4, *shape)).astype("float32")
    y = rng.integers(0, classes, batch * 4).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(4)
    with precision_scope(precision):
        model = zoo.build(model_name, input_shape=shape, num_classes=classes, **overrides)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    return median_step_seconds(model, ds, steps)


def bench_training(steps: int, quick: bool) -> list[dict]:
    # mixed_float16 convolutions have no fast CPU kernel (small_cnn at batch 128: ~15 s a step on a Xeon with AMX,
    # 0.07 s in float32), so the quick smoke run times every precision at batch 8.
    cases = [("small_cnn", {}, (28, 28, 1), 10, 8 if quick else 128)]
    if not quick:
        cases.append(("resnet18", {"stem": "small", "width": 32}, (32, 32, 3), 10, 64))
    rows = []
    for name, overrides, shape, classes, batch in cases:
        base = None
        for precision, jit in (("float32", False), ("float32", True), ("mixed_bfloat16", False),
                               ("mixed_float16", False)):
            sec = time_training(name, overrides, shape, classes, batch, steps, precision, jit)
            base = base or sec
            rows.append({"model": name, "input": list(shape), "batch": batch, "precision": precision, "xla": jit,
                         "seconds_per_step": sec, "examples_per_second": batch / sec, "time_vs_float32": sec / base})
    return rows


def bench_pipeline(steps: int, augment: bool, rounds: int = 12) -> dict:
    """The image_classify recipe's own tf.data training stream against the same batches cached in memory,
    on the recipe's model: the step-time ratio says what the input pipeline costs the training step."""
    import keras
    import tensorflow as tf

    from zoo.recipes import get_recipe
    from zoo.recipes.engine.run import resolve_config

    recipe = get_recipe("image_classify")
    overrides = {"train.tensorboard": False}
    if augment:
        overrides.update({"augment.flip": "horizontal", "augment.rotation": 0.05, "augment.zoom": 0.1})
    cfg, explicit = resolve_config(recipe.config_class, overrides)
    keras.utils.set_random_seed(0)
    cfg, data = recipe.prepare_data(cfg, explicit)
    model = recipe.build_model(cfg, data)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **recipe.compile_args(cfg))
    batches = list(data.train.take(data.steps_per_epoch))
    xs = tf.concat([b[0] for b in batches], 0)
    ys = tf.concat([b[1] for b in batches], 0)
    cached = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(cfg.train.batch_size).cache().repeat().prefetch(2)
    # Alternating rounds (a shared VM drifts): the ratio is the median of per-round ratios. Steps are
    # a few ms here, so many rounds of ``steps`` steps cost seconds and steady the median.
    times, per_round = paired_step_seconds({"cached": (model, cached), "pipeline": (model, data.train)},
                                           steps, rounds=rounds)
    return {"augment": augment, "batch": cfg.train.batch_size, "pipeline_ms": times["pipeline"] * 1e3,
            "cached_ms": times["cached"] * 1e3, "pipeline_vs_cached": paired_ratio(per_round, "pipeline", "cached")}


def bench_export(tmp: str, epochs: int, latency_runs: int = 200) -> dict:
    from zoo.export.exporter import export_run
    from zoo.recipes.engine.run import train

    result = train("image_classify", os.path.join(tmp, "run"), {"train.epochs": epochs, "train.tensorboard": False},
                   verbose=0)
    _, report = export_run(result.run_dir, os.path.join(tmp, "exports"), "digits",
                           "saved_model,tflite,tflite_float16,tflite_dynamic,tflite_int8", latency_runs=latency_runs)
    keras_ms = report["keras"]["latency_ms"]["p50"]
    return {
        "keras_accuracy": report["keras"]["accuracy"], "keras_p50_ms": keras_ms,
        "formats": {f: {"accuracy": r["accuracy"], "size_ratio": r["size_ratio"], "p50_ms": r["latency_ms"]["p50"],
                        "speedup_vs_keras": keras_ms / r["latency_ms"]["p50"]} for f, r in report["formats"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="small_cnn only, 5 steps, a 1-epoch export timed 20 times")
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args()
    import tempfile

    os.makedirs(args.out, exist_ok=True)
    steps = 5 if args.quick else args.steps
    training = bench_training(steps, args.quick)
    pipeline = [bench_pipeline(steps, augment, rounds=2) if args.quick else bench_pipeline(50, augment)
                for augment in (False, True)]
    with tempfile.TemporaryDirectory() as tmp:
        export = bench_export(tmp, 1, 20) if args.quick else bench_export(tmp, 20)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "training": training,
              "pipeline": pipeline, "export": export}
    with open(os.path.join(args.out, "training.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"{'model':<10} {'precision':<15} {'xla':<5} {'ms/step':>9} {'ex/s':>9} {'time vs f32':>12}")
    for r in training:
        print(f"{r['model']:<10} {r['precision']:<15} {str(r['xla']):<5} {r['seconds_per_step'] * 1e3:>9.2f} "
              f"{r['examples_per_second']:>9.0f} {r['time_vs_float32']:>12.2f}")
    print("\ninput pipeline (image_classify's training stream vs the same batches cached)")
    for r in pipeline:
        print(f"augment={str(r['augment']):<5} pipeline {r['pipeline_ms']:.2f} ms/step  cached {r['cached_ms']:.2f}  "
              f"ratio {r['pipeline_vs_cached']:.2f}")
    print(f"\nexport (digits small_cnn, keras p50 {export['keras_p50_ms']:.3f} ms at batch 1)")
    print(f"{'format':<16} {'accuracy':>8} {'size vs f32':>12} {'p50 ms':>8} {'speed vs keras':>15}")
    for f, r in export["formats"].items():
        ratio = f"{r['size_ratio']:.2f}" if r["size_ratio"] is not None else "-"
        print(f"{f:<16} {r['accuracy']:>8.4f} {ratio:>12} {r['p50_ms']:>8.3f} {r['speedup_vs_keras']:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
