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

from zoo.atomic import write_json_atomic
from zoo.config import from_dict
from zoo.errors import ConfigError, ExportError, ZooError
from zoo.rundir import RunDir
from zoo.tasks.image_classification import ImageClassificationInfo

KINDS = ("qat", "prune")
CNN_MODELS = ("small_cnn", "resnet")


def _check(kind: str, run: RunDir, sparsity: float, epochs: int) -> ImageClassificationInfo:
    if kind not in KINDS:
        raise ConfigError(f"unknown compression {kind!r}; choose from {', '.join(KINDS)}")
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"--sparsity {sparsity} must be between 0 and 1 (exclusive), e.g. 0.8 for 80% zeros")
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs} must be at least 1")
    info = run.info
    if not isinstance(info, ImageClassificationInfo) or not info.model.startswith(CNN_MODELS):
        raise ZooError(
            f"{kind} works on the CNN baselines (small_cnn, resnet*) through tensorflow-model-optimization; "
            f"run {run.path!r} holds {info.model!r}. tfmot has no QAT for attention layers: for BERT use the "
            "post-training TFLite modes (tflite_dynamic, tflite_int8_weights, tflite_int16x8)")
    return info


def _training_setup(run: RunDir, max_examples: int) -> tuple[Any, int, np.ndarray, np.ndarray]:
    """(model config, seed, x, y): the run's model and up to ``max_examples`` of its own training data,
    in the order and with the augmentation of its first epoch."""
    from zoo.data.images import AugmentConfig, ImageDataConfig, training_arrays

    train = run.config_section("train")
    data = from_dict(ImageDataConfig, run.config_section("data"), prefix="data.")
    augment = from_dict(AugmentConfig, run.read_config().get("augment") or {}, prefix="augment.")
    x, y = training_arrays(data, augment, int(train["seed"]), int(train["batch_size"]), max_examples)
    return run.model_config(), int(train["seed"]), x, y


def _run_worker(job_dir: str) -> dict[str, Any]:
    # `python -m`: the installed package (editable or wheel) resolves zoo.export, wherever it lives.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
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
    from zoo.config import to_dict
    from zoo.export import exporter
    from zoo.export import tflite as tfl

    run = RunDir.open(run_dir, need=(RunDir.EVAL_SAMPLE, RunDir.CONFIG))
    info = _check(kind, run, sparsity, epochs)
    model_cfg, seed, x, y = _training_setup(run, max_examples)
    x_eval, y_eval = run.eval_sample()
    model = run.load_model()
    with tempfile.TemporaryDirectory(prefix="zoo-compress-") as job_dir:
        fields = {k: v for k, v in json.loads(json.dumps(to_dict(model_cfg))).items() if k != "name"}
        job = {"kind": kind, "model_name": model_cfg.name, "model_config": fields, "epochs": epochs,
               "sparsity": sparsity, "learning_rate": learning_rate, "batch_size": batch_size,
               "seed": seed, "ramp_fraction": 0.8}
        write_json_atomic(os.path.join(job_dir, "job.json"), job)
        np.savez(os.path.join(job_dir, "weights.npz"), **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        np.savez(os.path.join(job_dir, "data.npz"), x=x, y=y, x_eval=x_eval, y_eval=y_eval)
        result = _run_worker(job_dir)
        if kind == "prune":
            with np.load(os.path.join(job_dir, "pruned_weights.npz")) as z:
                pruned = [z[f"w{i}"] for i in range(len(z.files))]
        else:
            with open(os.path.join(job_dir, "model_qat_int8.tflite"), "rb") as fh:
                qat_content = fh.read()
            qat_logits = np.load(os.path.join(job_dir, "qat_logits.npy"))
    if kind == "prune":
        return _finish_pruning(run, info, model, pruned, result, sparsity, to, name, version, latency_runs)
    float_logits = exporter.verify.batched(lambda b: np.asarray(model(b, training=False)), x_eval)
    outputs = exporter.verify.batched(tfl.TFLiteRunner(qat_content), x_eval)
    # The file's differences are measured against the QAT Keras model it was converted from (what int8
    # conversion changed); its accuracy is set beside the float model the run trained (what QAT cost or gained).
    scores = exporter.verify.compare(qat_logits, outputs, y_eval)
    float_acc = exporter.verify.compare(float_logits, float_logits, y_eval)["accuracy"]
    summary = {"kind": "qat", "run_dir": os.path.abspath(run_dir),
               "reference": "the QAT Keras model the file was converted from (differences, agreement); "
                            "accuracy_delta is against the float model before QAT",
               "keras_accuracy": float_acc, "qat_keras_accuracy": result["qat_keras_accuracy"],
               **{f"tflite_{k}": v for k, v in scores.items()},
               "tflite_label_agreement_with_float_model": float(np.mean(outputs.argmax(-1) == float_logits.argmax(-1))),
               "accuracy_delta": scores["accuracy"] - float_acc, "size_bytes": len(qat_content)}
    if to:
        summary["version_dir"], summary["report"] = exporter.export_run(
            run_dir, to, name or f"{info.model}_qat", "tflite", version, latency_runs=latency_runs,
            extra_report={"compression": {k: v for k, v in summary.items() if k != "run_dir"}},
            extra_tflite={"tflite_qat_int8": qat_content})
    return summary


def _finish_pruning(run: RunDir, info: ImageClassificationInfo, model: Any, weights: list[np.ndarray],
                    result: dict[str, Any], sparsity: float, to: str | None, name: str | None,
                    version: int | None, latency_runs: int) -> dict[str, Any]:
    """Pruned weights into the Keras 3 model, a run dir of its own, and (with ``to``) an export."""
    from zoo.export import exporter
    from zoo.export import saved_model as sm
    from zoo.export import tflite as tfl

    out = run.compressed_dir(f"prune-{sparsity:.2f}")
    staging = out.staging()
    shutil.rmtree(staging.path, ignore_errors=True)
    os.makedirs(staging.path)
    run.copy_shared_files(staging)
    dense_weights = model.get_weights()
    model.set_weights(weights)
    model.save(staging.model_path)
    sizes = {}
    for label, ws in (("unpruned", dense_weights), ("pruned", weights)):
        model.set_weights(ws)
        with tempfile.TemporaryDirectory() as src:
            sm.write_logits_saved_model(model, src, info.input)
            content = tfl.convert_saved_model(src, "tflite")
        sizes[label] = {"tflite_bytes": len(content), "gzip_bytes": _gzip_size(content)}
    model.set_weights(weights)
    summary = {"kind": "prune", "run_dir": os.path.abspath(run.path), "pruned_run_dir": os.path.abspath(out.path),
               "target_sparsity": sparsity, "sparsity": result["sparsity"], "sizes": sizes,
               "gzip_ratio": sizes["pruned"]["gzip_bytes"] / sizes["unpruned"]["gzip_bytes"]}
    write_json_atomic(staging.file(RunDir.COMPRESSION), summary)
    shutil.rmtree(out.path, ignore_errors=True)
    os.replace(staging.path, out.path)
    if to:
        summary["version_dir"], summary["report"] = exporter.export_run(
            out.path, to, name or f"{info.model}_pruned", "saved_model,tflite,tflite_dynamic",
            version, latency_runs=latency_runs, extra_report={"compression": summary})
    return summary
