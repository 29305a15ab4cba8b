"""``zoo compress``: quantization-aware training and magnitude pruning of the CNN baselines.

    zoo compress qat   runs/<run> --epochs 2 --to exports       # QAT fine-tuning, then an int8 TFLite file
    zoo compress prune runs/<run> --sparsity 0.8 --to exports   # pruning to 80% zeros, stripped, exported

tensorflow-model-optimization does the work on a ``tf_keras`` twin of the model, in a separate
process (``zoo.export.tfmot_worker``), so this process keeps Keras 3 untouched. What comes back:

* pruning: the stripped weights go back into the Keras 3 model, saved as a run dir of its own
  (``<run>/compressed/prune-0.80``: same run.json, eval sample and calibration data) and exported
  like any run; the report adds the gzip-compressed size of the float32 TFLite file against the
  unpruned one (zeros compress; TFLite itself stores dense tensors).
* QAT: the int8 TFLite file converted from the quantization-aware model, verified against the
  original Keras model on the eval sample and published as a version of its own.

Attention layers have no QAT support in tfmot: BERT runs are refused here; use the post-training
modes (``tflite_dynamic``, ``tflite_int8_weights``, ``tflite_int16x8``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from zoo.config import flatten, load_config_file, to_dict, write_text_atomic
from zoo.errors import ConfigError, ExportError, ZooError

KINDS = ("qat", "prune")
CNN_MODELS = ("small_cnn", "resnet")


def _check(kind: str, info: dict[str, Any], run_dir: str, sparsity: float, epochs: int) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown compression {kind!r}; choose from {', '.join(KINDS)}")
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"--sparsity {sparsity} must be between 0 and 1 (exclusive), e.g. 0.8 for 80% zeros")
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs} must be at least 1")
    model = str(info.get("model", ""))
    if info.get("task") != "image_classification" or not model.startswith(CNN_MODELS):
        raise ZooError(
            f"{kind} works on the CNN baselines (small_cnn, resnet*) through tensorflow-model-optimization; "
            f"run {run_dir!r} holds {model!r}. tfmot has no QAT for attention layers: for BERT use the "
            "post-training TFLite modes (tflite_dynamic, tflite_int8_weights, tflite_int16x8)")


def _training_arrays(run_dir: str, max_examples: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """(recipe config, x, y): one pass of the run's own training data, as arrays."""
    from zoo.recipes import get_recipe_module
    from zoo.recipes.engine.run import resolve_config

    cfg_dict = flatten(load_config_file(os.path.join(run_dir, "config.yaml")))
    with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as fh:
        recipe = get_recipe_module(json.load(fh)["recipe"]).RECIPE
    cfg, explicit = resolve_config(recipe.config_class, cfg_dict)
    cfg, data = recipe.prepare_data(cfg, explicit)
    xs, ys, n = [], [], 0
    for x, y in data.train.take(data.steps_per_epoch):
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        n += len(xs[-1])
        if n >= max_examples:
            break
    return cfg, np.concatenate(xs)[:max_examples], np.concatenate(ys)[:max_examples]


def _run_worker(job_dir: str) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "zoo.export.tfmot_worker", job_dir], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ExportError(f"the tfmot worker failed (exit {proc.returncode}):\n{tail}")
    with open(os.path.join(job_dir, "result.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _gzip_size(content: bytes) -> int:
    return len(gzip.compress(content, compresslevel=9))


def compress(kind: str, run_dir: str, *, epochs: int = 2, sparsity: float = 0.8, learning_rate: float = 1e-4,
             batch_size: int = 32, max_examples: int = 20000, to: str | None = None, name: str | None = None,
             version: int | None = None, latency_runs: int = 20) -> dict[str, Any]:
    """Run QAT or pruning on a finished CNN run; returns a summary (and publishes if ``to`` is given)."""
    import zoo
    from zoo.export import exporter
    from zoo.export import tflite as tfl

    run = exporter.load_run(run_dir)
    info = run["info"]
    _check(kind, info, run_dir, sparsity, epochs)
    cfg, x, y = _training_arrays(run_dir, max_examples)
    model = zoo.load(run["model_path"], compile=False)
    with tempfile.TemporaryDirectory(prefix="zoo-compress-") as job_dir:
        model_cfg = {k: v for k, v in json.loads(json.dumps(to_dict(cfg.model))).items() if k != "name"}
        job = {"kind": kind, "model_name": cfg.model.name, "model_config": model_cfg, "epochs": epochs,
               "sparsity": sparsity, "learning_rate": learning_rate, "batch_size": batch_size,
               "seed": int(cfg.train.seed), "ramp_fraction": 0.8}
        write_text_atomic(os.path.join(job_dir, "job.json"), json.dumps(job))
        np.savez(os.path.join(job_dir, "weights.npz"), **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        np.savez(os.path.join(job_dir, "data.npz"), x=x, y=y, x_eval=run["x"], y_eval=run["y"])
        result = _run_worker(job_dir)
        if kind == "prune":
            with np.load(os.path.join(job_dir, "pruned_weights.npz")) as z:
                pruned = [z[f"w{i}"] for i in range(len(z.files))]
        else:
            with open(os.path.join(job_dir, "model_qat_int8.tflite"), "rb") as fh:
                qat_content = fh.read()
    if kind == "prune":
        return _finish_pruning(run_dir, run, model, pruned, result, sparsity, to, name, version, latency_runs)
    adapter = exporter.ImageClassifierAdapter(model, info)
    reference = exporter.verify.batched(adapter.keras, run["x"])
    runner = tfl.TFLiteRunner(qat_content)
    outputs = exporter.verify.batched(runner, run["x"])
    scores = exporter.verify.compare(reference, outputs, run["y"])
    keras_acc = exporter.verify.compare(reference, reference, run["y"])["accuracy"]
    summary = {"kind": "qat", "run_dir": os.path.abspath(run_dir), "keras_accuracy": keras_acc,
               "qat_keras_accuracy": result["qat_keras_accuracy"], **{f"tflite_{k}": v for k, v in scores.items()},
               "accuracy_delta": scores["accuracy"] - keras_acc, "size_bytes": len(qat_content)}
    if to:
        summary["version_dir"], summary["report"] = exporter.export_run(
            run_dir, to, name or f"{info.get('model', 'model')}_qat", "tflite", version, latency_runs=latency_runs,
            extra_report={"compression": {k: v for k, v in summary.items() if k != "run_dir"}},
            extra_tflite={"tflite_qat_int8": qat_content})
    return summary


def _finish_pruning(run_dir: str, run: dict[str, Any], model: Any, weights: list[np.ndarray],
                    result: dict[str, Any], sparsity: float, to: str | None, name: str | None,
                    version: int | None, latency_runs: int) -> dict[str, Any]:
    """Pruned weights into the Keras 3 model, a run dir of its own, and (with ``to``) an export."""
    from zoo.export import exporter
    from zoo.export import saved_model as sm
    from zoo.export import tflite as tfl

    out_dir = os.path.join(run_dir, "compressed", f"prune-{sparsity:.2f}")
    staging = out_dir + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for f in ("config.yaml", "run.json", "eval_sample.npz", "calibration.npz", "vocab.txt"):
        if os.path.isfile(os.path.join(run_dir, f)):
            shutil.copy2(os.path.join(run_dir, f), staging)
    dense_weights = model.get_weights()
    model.set_weights(weights)
    model.save(os.path.join(staging, "model.keras"))
    sizes = {}
    for label, ws in (("unpruned", dense_weights), ("pruned", weights)):
        model.set_weights(ws)
        with tempfile.TemporaryDirectory() as src:
            sm.write_logits_saved_model(model, src, run["info"]["input"])
            content = tfl.convert_saved_model(src, "tflite")
        sizes[label] = {"tflite_bytes": len(content), "gzip_bytes": _gzip_size(content)}
    model.set_weights(weights)
    summary = {"kind": "prune", "run_dir": os.path.abspath(run_dir), "pruned_run_dir": os.path.abspath(out_dir),
               "target_sparsity": sparsity, "sparsity": result["sparsity"], "sizes": sizes,
               "gzip_ratio": sizes["pruned"]["gzip_bytes"] / sizes["unpruned"]["gzip_bytes"]}
    write_text_atomic(os.path.join(staging, "compression.json"), json.dumps(summary, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)
    if to:
        summary["version_dir"], summary["report"] = exporter.export_run(
            out_dir, to, name or f"{run['info'].get('model', 'model')}_pruned", "saved_model,tflite,tflite_dynamic",
            version, latency_runs=latency_runs, extra_report={"compression": summary})
    return summary
