"""Export a finished run: SavedModel and TFLite files in one new TF Serving version, verified.

    zoo export runs/<run> --to exports --name digits --formats saved_model,tflite,tflite_dynamic,tflite_int8

writes ``exports/digits/<version>/`` holding the SavedModel (``serving_default``), the
``.tflite`` files and ``report.json`` (per format: accuracy, differences from Keras, size,
latency). The version appears only once everything in it is written and verified.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zoo.config import write_text_atomic
from zoo.errors import ExportError, unknown_name
from zoo.export import saved_model as sm
from zoo.export import tflite as tfl
from zoo.export import verify

log = logging.getLogger(__name__)

FORMATS = ("saved_model", *tfl.TFLITE_FORMATS)
DEFAULT_FORMATS = ("saved_model", "tflite", "tflite_dynamic", "tflite_int8")


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """Validate a comma-separated or listed set of formats (order kept, duplicates dropped)."""
    items = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    items = [f for f in items if f]
    if not items:
        raise ExportError(f"no export formats given; choose from {', '.join(FORMATS)}")
    for f in items:
        if f not in FORMATS:
            raise unknown_name("export format", f, FORMATS)
    return list(dict.fromkeys(items))


def load_run(run_dir: str) -> dict[str, Any]:
    """What export needs from a run dir, with an error naming anything missing."""
    if not os.path.isdir(run_dir):
        raise ExportError(f"run dir {run_dir!r} does not exist")
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(model_path):
        raise ExportError(
            f"run dir {run_dir!r} has no final model (model.keras): the run did not finish. "
            "Resume it with `zoo train <recipe> --run-dir` on the same dir, then export"
        )
    info_path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(info_path):
        raise ExportError(f"run dir {run_dir!r} has no run.json; it was not written by `zoo train`")
    with open(info_path, encoding="utf-8") as fh:
        info = json.load(fh)
    sample_path = os.path.join(run_dir, "eval_sample.npz")
    if not os.path.isfile(sample_path):
        raise ExportError(f"run dir {run_dir!r} has no eval_sample.npz to verify the export against")
    with np.load(sample_path) as z:
        x_eval, y_eval = z["x"], z["y"]
    calib = None
    calib_path = os.path.join(run_dir, "calibration.npz")
    if os.path.isfile(calib_path):
        with np.load(calib_path) as z:
            calib = z["x"]
    return {"model_path": model_path, "info": info, "x": x_eval, "y": y_eval, "calibration": calib}


class ImageClassifierAdapter:
    """How to call, save and convert a classifier on numeric inputs (images, token ids)."""

    def __init__(self, model: Any, info: dict[str, Any]):
        self.model, self.info, self.spec = model, info, info["input"]
        self.custom_ops = False

    def keras(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))

    def write_saved_model(self, path: str) -> None:
        sm.write_classifier_saved_model(self.model, path, self.spec, self.info.get("class_names"))

    def write_tflite_source(self, path: str) -> None:
        sm.write_logits_saved_model(self.model, path, self.spec)

    def saved_model_fn(self, path: str) -> Callable[[np.ndarray], np.ndarray]:
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        return lambda b: fn(**{self.spec["name"]: tf.constant(b)})["logits"].numpy()

    def tflite_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        return tfl.TFLiteRunner(content)

    def write_int16x8_source(self, path: str, calibration: np.ndarray) -> Callable[[], Any]:
        """The int16x8 source graph (traced under int16x8_friendly_graph) and its representative data."""
        with tfl.int16x8_friendly_graph():
            sm.write_logits_saved_model(self.model, path, self.spec)
        return tfl.representative_dataset(calibration, self.spec["shape"])

    def int16x8_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        return tfl.TFLiteRunner(content)

    int16x8_input = None  # same input as the other files


class TextClassifierAdapter(ImageClassifierAdapter):
    """A BERT classifier served on raw strings: the preprocessor runs inside every export."""

    def __init__(self, model: Any, info: dict[str, Any], run_dir: str):
        super().__init__(model, info)
        from zoo.tokenizers import BertPreprocessor, load_vocabulary

        p = info["preprocessor"]
        self.preprocessor = BertPreprocessor(load_vocabulary(os.path.join(run_dir, p["vocabulary_file"])),
                                             sequence_length=p["sequence_length"], lowercase=p["lowercase"])
        self.names = [self.spec["name"]] + ([self.spec["pair_name"]] if self.spec.get("pair_name") else [])
        self.custom_ops = True

    def _split(self, batch: np.ndarray) -> tuple[Any, ...]:
        return (batch[:, 0], batch[:, 1]) if batch.ndim == 2 else (batch,)

    def _packed(self, batch: np.ndarray) -> dict[str, Any]:
        return self.preprocessor(tuple(t.tolist() for t in self._split(batch)))

    def keras(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(self._packed(batch), training=False))

    def write_saved_model(self, path: str) -> None:
        sm.write_text_classifier_saved_model(self.model, self.preprocessor, path, self.names,
                                             self.info.get("class_names"))

    def write_tflite_source(self, path: str) -> None:
        sm.write_text_classifier_saved_model(self.model, self.preprocessor, path, self.names, None,
                                             logits_only=True)

    def saved_model_fn(self, path: str) -> Callable[[np.ndarray], np.ndarray]:
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        return lambda b: fn(**{n: tf.constant(t) for n, t in zip(self.names, self._split(b))})["logits"].numpy()

    def tflite_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        runner = tfl.TextTFLiteRunner(content)
        return lambda b: runner(**dict(zip(self.names, self._split(b))))

    # The converter's int16x8 calibration cannot run the in-graph tokenizer (its int32 packing ops
    # need ranges the calibrator never records), so this file takes the token ids.
    int16x8_input = "token_ids, segment_ids, padding_mask (int32 [batch, sequence_length]; tokenize first)"

    def _ids(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.int32) for k, v in self._packed(batch).items()}

    def write_int16x8_source(self, path: str, calibration: np.ndarray) -> Callable[[], Any]:
        import tensorflow as tf

        names = ("token_ids", "segment_ids", "padding_mask")
        length = self.preprocessor.sequence_length
        specs = [tf.TensorSpec([None, length], tf.int32, name=n) for n in names]
        model = self.model

        def serve(*ids):
            return {"logits": tf.cast(model(dict(zip(names, ids)), training=False), tf.float32)}

        with tfl.int16x8_friendly_graph():
            sm.save_serving_module(model, serve, specs, path)
        batches = [self._ids(calibration[i:i + 8]) for i in range(0, len(calibration), 8)]
        return lambda: iter(batches)

    def int16x8_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        interpreter = tfl._interpreter_class()(model_content=content, num_threads=1)
        runner = interpreter.get_signature_runner("serving_default")
        return lambda b: np.asarray(runner(**self._ids(b))["logits"], np.float32)


def export_run(run_dir: str, base: str, name: str, formats: str | Sequence[str] = DEFAULT_FORMATS,
               version: int | None = None, report_path: str | None = None,
               latency_runs: int = 50, decode: dict[str, Any] | None = None,
               extra_report: dict[str, Any] | None = None,
               extra_tflite: dict[str, bytes] | None = None) -> tuple[str, dict[str, Any]]:
    """Export, verify and publish a run; returns (version dir, report).

    ``decode`` (translation runs only): decoding options baked into the SavedModel, e.g.
    ``{"method": "beam", "beam_width": 4}``; greedy by default. ``extra_report`` is merged into
    the report; ``extra_tflite`` maps format labels (``tflite_qat_int8``) to TFLite files made
    elsewhere (``zoo compress``), verified and published like the converted ones.
    """
    import zoo

    fmts = parse_formats(formats)
    run = load_run(run_dir)
    info = run["info"]
    task = info.get("task")
    if task == "translation":
        return _export_translation(run_dir, run, base, name, fmts, version, report_path, latency_runs, decode or {})
    if decode:
        raise ExportError("decoding options (--beam) apply to translation runs only")
    if task not in ("image_classification", "text_classification"):
        raise ExportError(f"export of task {task!r} is not supported yet")
    text = "preprocessor" in info
    if "tflite_int8" in fmts and text:
        raise ExportError("tflite_int8 quantizes inputs to int8, but this model takes strings; "
                          "use tflite_dynamic or tflite_int8_weights (int8 weights) for text models")
    for fmt in tfl.CALIBRATED:
        if fmt in fmts and run["calibration"] is None:
            raise ExportError(f"{fmt} needs calibration.npz in {run_dir!r} (written by `zoo train`)")
    model = zoo.load(run["model_path"], compile=False)
    adapter = TextClassifierAdapter(model, info, run_dir) if text else ImageClassifierAdapter(model, info)
    x, y = run["x"], run["y"]
    reference = verify.batched(adapter.keras, x)
    keras_scores = verify.compare(reference, reference, y)
    scale = max(1.0, float(np.abs(reference).max()))
    report: dict[str, Any] = {
        "run_dir": os.path.abspath(run_dir), "model": info.get("model"), "examples": int(len(x)),
        "input": "raw strings" if text else f"{info['input']['dtype']} {info['input']['shape']}",
        "keras": {"accuracy": keras_scores["accuracy"],
                  "latency_ms": verify.latency_ms(adapter.keras, x[:1], latency_runs)},
        "formats": {},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        **(extra_report or {}),
    }

    def record(fmt: str, outputs: np.ndarray, size: int, latency: dict[str, float], path: str,
               **extra: Any) -> None:
        scores = verify.compare(reference, outputs, y)
        tol = verify.FLOAT_TOLERANCE.get(fmt)
        if tol is not None and scores["max_abs_diff"] > tol * scale:
            raise ExportError(
                f"{fmt} disagrees with the Keras model: max |diff| {scores['max_abs_diff']:.3g} > {tol * scale:.3g}; "
                "nothing was published"
            )
        report["formats"][fmt] = {**scores, "accuracy_delta": scores["accuracy"] - keras_scores["accuracy"],
                                  "size_bytes": int(size), "latency_ms": latency, "file": path, **extra}

    def add_tflite(fmt: str, content: bytes, fname: str, make_runner: Callable[[bytes], Any], **extra: Any) -> None:
        """Write one TFLite file into the version and record its parity, size, latency and ops."""
        with open(os.path.join(staging, fname), "wb") as fh:
            fh.write(content)
        sm.failpoint("tflite_written")
        run_tflite = make_runner(content)  # one interpreter for parity and latency
        record(fmt, verify.batched(run_tflite, x), len(content), verify.latency_ms(run_tflite, x[:1], latency_runs),
               fname, ops=tfl.describe_ops(content), **extra)

    with sm.publish_version(base, name, version) as (staging, ver):
        report["version"] = ver
        if "saved_model" in fmts:
            adapter.write_saved_model(staging)
            sm.failpoint("saved_model_written")
            call = adapter.saved_model_fn(staging)
            record("saved_model", verify.batched(call, x), sm.directory_size(staging),
                   verify.latency_ms(call, x[:1], latency_runs), ".")
        tflite_fmts = [f for f in fmts if f in tfl.TFLITE_FORMATS and f not in tfl.SEPARATE_SOURCE]
        if tflite_fmts:
            with tempfile.TemporaryDirectory(dir=staging, prefix=".src-") as src:
                adapter.write_tflite_source(src)
                log.info("converting to %s", ", ".join(tflite_fmts))
                for fmt, content in tfl.convert_formats(src, tflite_fmts, run["calibration"], info["input"]["shape"],
                                                        custom_ops=adapter.custom_ops):
                    add_tflite(fmt, content, tfl.TFLITE_FORMATS[fmt][0], adapter.tflite_fn)
        if "tflite_int16x8" in fmts:
            with tempfile.TemporaryDirectory(dir=staging, prefix=".src16-") as src:
                log.info("converting to tflite_int16x8")
                content = tfl.convert_int16x8(src, adapter.write_int16x8_source(src, run["calibration"]))
            extra = {"input": adapter.int16x8_input} if adapter.int16x8_input else {}
            add_tflite("tflite_int16x8", content, tfl.TFLITE_FORMATS["tflite_int16x8"][0], adapter.int16x8_fn,
                       **extra)
        for label, content in (extra_tflite or {}).items():
            add_tflite(label, content, f"model_{label.removeprefix('tflite_')}.tflite", adapter.tflite_fn)
        f32 = report["formats"].get("tflite", {}).get("size_bytes")
        for fmt, r in report["formats"].items():
            r["size_ratio"] = (r["size_bytes"] / f32) if (f32 and fmt.startswith("tflite")) else None
        _write_report(report, staging)
    return _finish(base, name, report, report_path)


def _write_report(report: dict[str, Any], directory: str) -> None:
    """report.json, report.md (the table) and report.png (bar charts) into the staging dir."""
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(directory, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(verify.markdown_report(report))
    verify.plot_report(report, os.path.join(directory, "report.png"))


def _finish(base: str, name: str, report: dict[str, Any], report_path: str | None) -> tuple[str, dict[str, Any]]:
    version_dir = os.path.join(base, name, str(report["version"]))
    report["version_dir"] = version_dir
    report["models_config"] = sm.write_models_config(base)
    if report_path:
        os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
        write_text_atomic(report_path, json.dumps(report, indent=2))
    return version_dir, report


def _export_translation(run_dir: str, run: dict[str, Any], base: str, name: str, fmts: list[str],
                        version: int | None, report_path: str | None, latency_runs: int,
                        decode: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A string-to-string SavedModel, published only if it translates the eval sample exactly as Keras does."""
    import tensorflow as tf

    from zoo.metrics import corpus_bleu, exact_match
    from zoo.translator import Translator

    if fmts != ["saved_model"]:
        raise ExportError("a translation model exports as saved_model only (its decoding loop has no TFLite "
                          "form here); use --formats saved_model")
    translator = Translator.from_run(run_dir, **decode)
    sources = [str(s) for s in run["x"]]
    references = [str(s) for s in run["y"]]
    keras_out = translator(sources)
    report: dict[str, Any] = {
        "run_dir": os.path.abspath(run_dir), "model": run["info"].get("model"), "task": "translation",
        "examples": len(sources), "input": "raw strings", "decode": dataclasses.asdict(translator.decode),
        "keras": {"bleu": corpus_bleu(keras_out, references), "exact_match": exact_match(keras_out, references),
                  "latency_ms": verify.latency_ms(lambda b: translator(list(b)), sources[:1], latency_runs)},
        "formats": {}, "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    with sm.publish_version(base, name, version) as (staging, ver):
        report["version"] = ver
        sm.write_translator_saved_model(translator, staging)
        fn = tf.saved_model.load(staging).signatures["serving_default"]

        def call(batch: Sequence[str]) -> list[str]:
            return [s.decode("utf-8") for s in fn(text=tf.constant(list(batch)))["translation"].numpy()]

        exported = [t for i in range(0, len(sources), 64) for t in call(sources[i:i + 64])]
        agreement = float(np.mean([a == b for a, b in zip(exported, keras_out)]))
        if agreement < 1.0:
            first = next(i for i, (a, b) in enumerate(zip(exported, keras_out)) if a != b)
            raise ExportError(f"the SavedModel translates differently from Keras on {1 - agreement:.1%} of the eval "
                              f"sample (first: {sources[first]!r} -> {exported[first]!r} vs {keras_out[first]!r}); "
                              "nothing was published")
        report["formats"]["saved_model"] = {
            "bleu": corpus_bleu(exported, references), "exact_match": exact_match(exported, references),
            "agreement": agreement, "size_bytes": sm.directory_size(staging),
            "latency_ms": verify.latency_ms(call, sources[:1], latency_runs), "file": "."}
        _write_report(report, staging)
    return _finish(base, name, report, report_path)
