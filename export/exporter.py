"""Export a finished run: SavedModel and TFLite files in one new TF Serving version, verified.

    zoo export runs/<run> --to exports --name digits --formats saved_model,tflite,tflite_dynamic,tflite_int8

writes ``exports/digits/<version>/`` holding the SavedModel (``serving_default``), the
``.tflite`` files and ``report.json`` / ``report.md`` / ``report.png`` (per format: accuracy,
differences from Keras, size, latency). The version appears only once everything in it is
written and verified.

One exporter per task (each task plugin in ``zoo.tasks`` names its own): image classifiers, text
classifiers (raw strings in every file), question answering and translation models (strings to
strings). Classifier exporters share the verify-and-publish flow of :class:`ClassifierExporter`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zoo.atomic import write_json_atomic, write_text_atomic
from zoo.errors import ExportError, unknown_name
from zoo.export import publish, verify
from zoo.export import saved_model as sm
from zoo.export import tflite as tfl
from zoo.export.warmup import sample_batches, write_warmup_requests
from zoo.rundir import RunDir
from zoo.tasks.question_answering import QuestionAnsweringInfo
from zoo.tasks.translation import TranslationInfo

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


def _machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count()}


def write_report(report: dict[str, Any], directory: str) -> None:
    """report.json, report.md (the table) and report.png (bar charts) into a (staging) version dir."""
    write_json_atomic(os.path.join(directory, "report.json"), report)
    write_text_atomic(os.path.join(directory, "report.md"), verify.markdown_report(report))
    verify.plot_report(report, os.path.join(directory, "report.png"))


class ClassifierExporter(abc.ABC):
    """Verify-and-publish for classifiers; a subclass says how its model is called, saved and converted.

    The flow: Keras outputs on the run's eval sample are the reference; each format is written into
    the staging dir of a new version, run on the same sample, compared (float formats must agree
    within ``verify.FLOAT_TOLERANCE`` or nothing is published), timed and recorded in the report.
    """

    custom_ops = False             # TFLite conversion lets TF Text ops through as custom ops
    int16x8_input: str | None = None  # what the int16x8 file takes, when not the same input as the others
    refused: dict[str, str] = {}   # format -> why this kind of model cannot have it

    def __init__(self, run: RunDir, info: Any):
        self.run, self.info = run, info
        self.model = run.load_model()
        self.x, self.y = run.eval_sample()
        self.calibration = run.calibration()
        self.reference: np.ndarray | None = None
        self.report: dict[str, Any] = {}
        self.staging = ""
        self._scale = 1.0

    # -- what a task defines

    input_description = ""

    @abc.abstractmethod
    def keras_logits(self, batch: np.ndarray) -> np.ndarray:
        """The Keras model's logits on a batch of eval inputs: the reference every format is checked against."""

    @abc.abstractmethod
    def write_saved_model(self, path: str) -> None:
        """The serving SavedModel (raw inputs, the serving head)."""

    @abc.abstractmethod
    def saved_model_fn(self, path: str) -> Callable[[np.ndarray], np.ndarray]:
        """A function running the written SavedModel on eval inputs, returning logits."""

    @abc.abstractmethod
    def write_tflite_source(self, path: str) -> None:
        """The SavedModel the TFLite converter starts from (logits only)."""

    @abc.abstractmethod
    def tflite_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        """A function running a TFLite file on eval inputs, returning logits."""

    @abc.abstractmethod
    def write_int16x8_source(self, path: str) -> Callable[[], Any]:
        """Write the int16x8 source graph; return its representative dataset."""

    def int16x8_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        return self.tflite_fn(content)

    # -- the shared flow

    @classmethod
    def check_formats(cls, run: RunDir, fmts: list[str]) -> None:
        """Refuse formats this model cannot have, before anything is loaded."""
        for fmt in fmts:
            if fmt in cls.refused:
                raise ExportError(cls.refused[fmt])
            if fmt in tfl.CALIBRATED and not os.path.isfile(run.calibration_path):
                raise ExportError(f"{fmt} needs {RunDir.CALIBRATION} in {run.path!r} (written by `zoo train`)")

    def export(self, base: str, name: str, fmts: list[str], version: int | None, latency_runs: int,
               extra_report: dict[str, Any] | None = None,
               extra_tflite: dict[str, bytes] | None = None) -> dict[str, Any]:
        self.check_formats(self.run, fmts)
        self.reference = verify.batched(self.keras_logits, self.x)
        keras_scores = verify.compare(self.reference, self.reference, self.y)
        self._scale = max(1.0, float(np.abs(self.reference).max()))
        self.latency_runs, self.name = latency_runs, name
        self.report = {
            "run_dir": os.path.abspath(self.run.path), "model": self.info.model, "task": self.info.task,
            "examples": int(len(self.x)),
            "input": self.input_description,
            "keras": {"accuracy": keras_scores["accuracy"],
                      "latency_ms": verify.latency_ms(self.keras_logits, self.x[:1], latency_runs)},
            "formats": {}, "machine": _machine(), **(extra_report or {}),
        }
        with publish.publish_version(base, name, version) as (staging, ver):
            self.staging = staging
            self.report["version"] = ver
            if "saved_model" in fmts:
                self._add_saved_model()
            converted = [f for f in fmts if f in tfl.TFLITE_FORMATS and f not in tfl.SEPARATE_SOURCE]
            if converted:
                with tempfile.TemporaryDirectory(dir=staging, prefix=".src-") as src:
                    self.write_tflite_source(src)
                    log.info("converting to %s", ", ".join(converted))
                    for fmt, content in tfl.convert_formats(src, converted, self.calibration, self.info.input.shape,
                                                            custom_ops=self.custom_ops):
                        self._add_tflite(fmt, content, tfl.TFLITE_FORMATS[fmt][0], self.tflite_fn)
            if "tflite_int16x8" in fmts:
                with tempfile.TemporaryDirectory(dir=staging, prefix=".src16-") as src:
                    log.info("converting to tflite_int16x8")
                    content = tfl.convert_int16x8(src, self.write_int16x8_source(src))
                extra = {"input": self.int16x8_input} if self.int16x8_input else {}
                self._add_tflite("tflite_int16x8", content, tfl.TFLITE_FORMATS["tflite_int16x8"][0], self.int16x8_fn,
                                 **extra)
            for label, content in (extra_tflite or {}).items():
                self._add_tflite(label, content, f"model_{label.removeprefix('tflite_')}.tflite", self.tflite_fn)
            f32 = self.report["formats"].get("tflite", {}).get("size_bytes")
            for fmt, r in self.report["formats"].items():
                r["size_ratio"] = (r["size_bytes"] / f32) if (f32 and fmt.startswith("tflite")) else None
            write_report(self.report, staging)
        return self.report

    def _record(self, fmt: str, outputs: np.ndarray, size: int, latency: dict[str, float], path: str,
                **extra: Any) -> None:
        keras_accuracy = self.report["keras"]["accuracy"]
        scores = verify.compare(self.reference, outputs, self.y)
        tol = verify.FLOAT_TOLERANCE.get(fmt)
        if tol is not None and scores["max_abs_diff"] > tol * self._scale:
            raise ExportError(f"{fmt} disagrees with the Keras model: max |diff| {scores['max_abs_diff']:.3g} > "
                              f"{tol * self._scale:.3g}; nothing was published")
        self.report["formats"][fmt] = {**scores, "accuracy_delta": scores["accuracy"] - keras_accuracy,
                                       "size_bytes": int(size), "latency_ms": latency, "file": path, **extra}

    def serving_inputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A batch of eval inputs as the serving signature's named inputs (for the warm-up requests)."""
        return {self.info.input.name: batch}

    def _add_saved_model(self) -> None:
        self.write_saved_model(self.staging)
        write_warmup_requests(self.staging, self.name, sample_batches(self.serving_inputs(self.x)))
        publish.reached("saved_model_written")
        call = self.saved_model_fn(self.staging)
        self._record("saved_model", verify.batched(call, self.x), publish.directory_size(self.staging),
                     verify.latency_ms(call, self.x[:1], self.latency_runs), ".")

    def _add_tflite(self, fmt: str, content: bytes, fname: str, make_runner: Callable[[bytes], Any],
                    **extra: Any) -> None:
        """Write one TFLite file into the version and record its parity, size, latency and ops."""
        with open(os.path.join(self.staging, fname), "wb") as fh:
            fh.write(content)
        publish.reached("tflite_written")
        run_tflite = make_runner(content)  # one interpreter for parity and latency
        self._record(fmt, verify.batched(run_tflite, self.x), len(content),
                     verify.latency_ms(run_tflite, self.x[:1], self.latency_runs), fname,
                     ops=tfl.describe_ops(content), **extra)


class ImageClassifierExporter(ClassifierExporter):
    """A classifier on numeric inputs (images): pixels in, the serving head out."""

    @property
    def input_description(self) -> str:  # type: ignore[override]
        return f"{self.info.input.dtype} {list(self.info.input.shape)}"

    def keras_logits(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))

    def write_saved_model(self, path: str) -> None:
        sm.write_classifier_saved_model(self.model, path, self.info.input, self.info.class_names)

    def write_tflite_source(self, path: str) -> None:
        sm.write_logits_saved_model(self.model, path, self.info.input)

    def saved_model_fn(self, path: str) -> Callable[[np.ndarray], np.ndarray]:
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        return lambda b: fn(**{self.info.input.name: tf.constant(b)})["logits"].numpy()

    def tflite_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        return tfl.TFLiteRunner(content)

    def write_int16x8_source(self, path: str) -> Callable[[], Any]:
        from zoo.keras_compat import int16x8_friendly_graph

        with int16x8_friendly_graph():
            sm.write_logits_saved_model(self.model, path, self.info.input)
        return tfl.representative_dataset(self.calibration, self.info.input.shape)


class TextClassifierExporter(ClassifierExporter):
    """A BERT (or distilled) classifier served on raw strings: the preprocessor runs inside every file."""

    custom_ops = True
    input_description = "raw strings"
    refused = {"tflite_int8": "tflite_int8 quantizes inputs to int8, but this model takes strings; use "
                              "tflite_dynamic or tflite_int8_weights (int8 weights) for text models"}
    # The converter's int16x8 calibration cannot run the in-graph tokenizer (its int32 packing ops
    # need ranges the calibrator never records), so this file takes the token ids.
    int16x8_input = "token_ids, segment_ids, padding_mask (int32 [batch, sequence_length]; tokenize first)"
    ID_NAMES = ("token_ids", "segment_ids", "padding_mask")

    def __init__(self, run: RunDir, info: Any):
        super().__init__(run, info)
        self.preprocessor = run.preprocessor()
        self.names = [info.input.name] + ([info.input.pair_name] if info.input.pair_name else [])

    def _split(self, batch: np.ndarray) -> tuple[Any, ...]:
        return (batch[:, 0], batch[:, 1]) if batch.ndim == 2 else (batch,)

    def _packed(self, batch: np.ndarray) -> dict[str, Any]:
        return self.preprocessor(tuple(t.tolist() for t in self._split(batch)))

    def keras_logits(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(self._packed(batch), training=False))

    def write_saved_model(self, path: str) -> None:
        sm.write_text_classifier_saved_model(self.model, self.preprocessor, path, self.names, self.info.class_names)

    def write_tflite_source(self, path: str) -> None:
        sm.write_text_classifier_saved_model(self.model, self.preprocessor, path, self.names, logits_only=True)

    def serving_inputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {n: np.asarray([str(s).encode("utf-8") for s in t], dtype=object)
                for n, t in zip(self.names, self._split(batch))}

    def saved_model_fn(self, path: str) -> Callable[[np.ndarray], np.ndarray]:
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        return lambda b: fn(**{n: tf.constant(t) for n, t in zip(self.names, self._split(b))})["logits"].numpy()

    def tflite_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        runner = tfl.TextTFLiteRunner(content)
        return lambda b: runner(**dict(zip(self.names, self._split(b))))

    def _ids(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.int32) for k, v in self._packed(batch).items()}

    def write_int16x8_source(self, path: str) -> Callable[[], Any]:
        import tensorflow as tf

        from zoo.keras_compat import int16x8_friendly_graph

        length = self.preprocessor.sequence_length
        specs = [tf.TensorSpec([None, length], tf.int32, name=n) for n in self.ID_NAMES]
        model = self.model

        def serve(*ids):
            return {"logits": tf.cast(model(dict(zip(self.ID_NAMES, ids)), training=False), tf.float32)}

        with int16x8_friendly_graph():
            sm.save_serving_module(model, serve, specs, path)
        batches = [self._ids(self.calibration[i:i + 8]) for i in range(0, len(self.calibration), 8)]
        return lambda: iter(batches)

    def int16x8_fn(self, content: bytes) -> Callable[[np.ndarray], np.ndarray]:
        interpreter = tfl.interpreter_class()(model_content=content, num_threads=1)
        runner = interpreter.get_signature_runner("serving_default")
        return lambda b: np.asarray(runner(**self._ids(b))["logits"], np.float32)


class TranslationExporter:
    """A string-to-string SavedModel, published only if it translates the eval sample exactly as Keras does."""

    takes_decoding = True  # exporter_for hands it the decoding options (--beam)

    def __init__(self, run: RunDir, info: TranslationInfo, decode: dict[str, Any] | None = None):
        from zoo.translator import Translator

        self.run, self.info = run, info
        # The graph TF Serving runs: no XLA (its CPU build has XLA JIT off), checked against itself.
        self.translator = Translator.from_run(run.path, jit_compile=False, **(decode or {}))
        x, y = run.eval_sample()
        self.sources, self.references = [str(s) for s in x], [str(s) for s in y]

    @classmethod
    def check_formats(cls, run: RunDir, fmts: list[str]) -> None:
        if fmts != ["saved_model"]:
            raise ExportError("a translation model exports as saved_model only (its decoding loop has no TFLite "
                              "form here); use --formats saved_model")

    def export(self, base: str, name: str, fmts: list[str], version: int | None, latency_runs: int,
               extra_report: dict[str, Any] | None = None, extra_tflite: dict[str, bytes] | None = None,
               ) -> dict[str, Any]:
        import tensorflow as tf

        from zoo.metrics import corpus_bleu, exact_match

        self.check_formats(self.run, fmts)
        if extra_tflite:
            raise ExportError("a translation model has no TFLite files to add")
        translator, sources, references = self.translator, self.sources, self.references
        keras_out = translator(sources)
        report: dict[str, Any] = {
            "run_dir": os.path.abspath(self.run.path), "model": self.info.model, "task": "translation",
            "examples": len(sources), "input": "raw strings", "decode": dataclasses.asdict(translator.decode),
            "keras": {"bleu": corpus_bleu(keras_out, references), "exact_match": exact_match(keras_out, references),
                      "latency_ms": verify.latency_ms(lambda b: translator(list(b)), sources[:1], latency_runs)},
            "formats": {}, "machine": _machine(), **(extra_report or {}),
        }
        with publish.publish_version(base, name, version) as (staging, ver):
            report["version"] = ver
            sm.write_translator_saved_model(translator, staging)
            texts = np.asarray([s.encode("utf-8") for s in sources], dtype=object)
            write_warmup_requests(staging, name, sample_batches({"text": texts}))
            publish.reached("saved_model_written")
            fn = tf.saved_model.load(staging).signatures["serving_default"]

            def call(batch: Sequence[str]) -> list[str]:
                return [s.decode("utf-8") for s in fn(text=tf.constant(list(batch)))["translation"].numpy()]

            exported = [t for i in range(0, len(sources), 64) for t in call(sources[i:i + 64])]
            agreement = float(np.mean([a == b for a, b in zip(exported, keras_out)]))
            if agreement < 1.0:
                first = next(i for i, (a, b) in enumerate(zip(exported, keras_out)) if a != b)
                raise ExportError(f"the SavedModel translates differently from Keras on {1 - agreement:.1%} of the "
                                  f"eval sample (first: {sources[first]!r} -> {exported[first]!r} vs "
                                  f"{keras_out[first]!r}); nothing was published")
            report["formats"]["saved_model"] = {
                "bleu": corpus_bleu(exported, references), "exact_match": exact_match(exported, references),
                "agreement": agreement, "size_bytes": publish.directory_size(staging),
                "latency_ms": verify.latency_ms(call, sources[:1], latency_runs), "file": "."}
            write_report(report, staging)
        return report


class QuestionAnsweringExporter:
    """Raw (question, context) strings in, the answer text, its score and character offsets out, in the
    SavedModel and in every TFLite file: all run one graph (:meth:`zoo.answerer.Answerer.answer_graph`).

    The Keras-side Answerer's answers on the eval sample are the reference. The SavedModel and the
    float32 TFLite file must give exactly those answers (text and offsets), or nothing is published;
    the 8-bit and float16 files are recorded with their agreement and exact-match delta.
    """

    INPUTS = ("question", "context")
    EXACT = ("saved_model", "tflite")   # formats that must answer exactly as Keras does
    TFLITE = ("tflite", "tflite_float16", "tflite_dynamic", "tflite_int8_weights")
    refused = {
        "tflite_int8": "tflite_int8 quantizes inputs to int8, but a question answering model takes strings; use "
                       "tflite_dynamic or tflite_int8_weights (int8 weights)",
        "tflite_int16x8": "tflite_int16x8 calibrates every activation, and the in-graph tokenizer and span search "
                          "have none to calibrate; use tflite_int8_weights (int8 weights, float activations)",
    }

    def __init__(self, run: RunDir, info: QuestionAnsweringInfo):
        from zoo.answerer import Answerer

        self.run, self.info = run, info
        self.answerer = Answerer.from_run(run.path)
        x, y = run.eval_sample()
        self.questions, self.contexts = [str(q) for q in x[:, 0]], [str(c) for c in x[:, 1]]
        self.references = [str(t) for t in y]
        self.report: dict[str, Any] = {}

    @classmethod
    def check_formats(cls, run: RunDir, fmts: list[str]) -> None:
        for fmt in fmts:
            if fmt in cls.refused:
                raise ExportError(cls.refused[fmt])

    def export(self, base: str, name: str, fmts: list[str], version: int | None, latency_runs: int,
               extra_report: dict[str, Any] | None = None, extra_tflite: dict[str, bytes] | None = None,
               ) -> dict[str, Any]:
        from zoo.metrics import squad_scores

        self.check_formats(self.run, fmts)
        if extra_tflite:
            raise ExportError("a question answering model has no TFLite files to add")
        qa, questions, contexts = self.answerer, self.questions, self.contexts
        self.truths = [[t] if t else [] for t in self.references]
        self.expected = [(a.text, a.start, a.end) for a in qa(questions, contexts)]
        self.latency_runs = latency_runs
        self.report = report = {
            "run_dir": os.path.abspath(self.run.path), "model": self.info.model, "task": "question_answering",
            "examples": len(questions), "input": "raw strings: question, context",
            "keras": {**squad_scores([t for t, _, _ in self.expected], self.truths),
                      "latency_ms": verify.latency_ms(lambda b: qa([questions[0]], [contexts[0]]), [0],
                                                      latency_runs)},
            "formats": {}, "machine": _machine(), **(extra_report or {}),
        }
        converted = [f for f in fmts if f in self.TFLITE]
        with publish.publish_version(base, name, version) as (staging, ver):
            report["version"] = ver
            if "saved_model" in fmts:
                self._write_saved_model(staging)
                write_warmup_requests(staging, name, sample_batches(self._strings(questions, contexts)))
                publish.reached("saved_model_written")
                self._record("saved_model", self._saved_model_fn(staging), publish.directory_size(staging), ".")
            if converted:
                # The TFLite files convert the very graph the SavedModel holds: reuse it when it was written.
                with contextlib.ExitStack() as stack:
                    src = staging
                    if "saved_model" not in fmts:
                        src = stack.enter_context(tempfile.TemporaryDirectory(dir=staging, prefix=".src-"))
                        self._write_saved_model(src)
                    log.info("converting to %s", ", ".join(converted))
                    for fmt, content in tfl.convert_formats(src, converted, custom_ops=True):
                        fname = tfl.TFLITE_FORMATS[fmt][0]
                        with open(os.path.join(staging, fname), "wb") as fh:
                            fh.write(content)
                        publish.reached("tflite_written")
                        runner = tfl.TextTFLiteRunner(content)
                        self._record(fmt, lambda qs, cs, r=runner: self._answers(r.outputs(question=qs, context=cs)),
                                     len(content), fname, ops=tfl.describe_ops(content))
            f32 = report["formats"].get("tflite", {}).get("size_bytes")
            for fmt, r in report["formats"].items():
                r["size_ratio"] = (r["size_bytes"] / f32) if (f32 and fmt.startswith("tflite")) else None
            write_report(report, staging)
        return report

    def _write_saved_model(self, path: str) -> None:
        import tensorflow as tf

        specs = [tf.TensorSpec([None], tf.string, name=n) for n in self.INPUTS]
        sm.save_serving_module(self.answerer.model, self.answerer.answer_graph, specs, path)

    @staticmethod
    def _strings(qs: Sequence[str], cs: Sequence[str]) -> dict[str, np.ndarray]:
        return {"question": np.asarray([q.encode("utf-8") for q in qs], dtype=object),
                "context": np.asarray([c.encode("utf-8") for c in cs], dtype=object)}

    @staticmethod
    def _answers(out: dict[str, Any]) -> list[tuple[str, int, int]]:
        return [(t.decode("utf-8"), int(s), int(e)) for t, s, e in
                zip(np.asarray(out["answer"]), np.asarray(out["start"]), np.asarray(out["end"]))]

    def _saved_model_fn(self, path: str) -> Callable[[Sequence[str], Sequence[str]], list[tuple[str, int, int]]]:
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        return lambda qs, cs: self._answers({k: v.numpy() for k, v in
                                             fn(question=tf.constant(list(qs)), context=tf.constant(list(cs))).items()})

    def _record(self, fmt: str, call: Callable[[Sequence[str], Sequence[str]], list[tuple[str, int, int]]],
                size: int, path: str, **extra: Any) -> None:
        """Answer the eval sample with one format, compare with Keras (exact formats must agree on every
        answer), time it and add its row to the report."""
        from zoo.metrics import squad_scores

        qs, cs, expected = self.questions, self.contexts, self.expected
        got = [r for i in range(0, len(qs), 16) for r in call(qs[i:i + 16], cs[i:i + 16])]
        agreement = float(np.mean([a == b for a, b in zip(got, expected)]))
        if fmt in self.EXACT and agreement < 1.0:
            k = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            raise ExportError(f"{fmt} answers differently from Keras on {1 - agreement:.1%} of the eval sample "
                              f"(first: {qs[k]!r} -> {got[k]} vs {expected[k]}); nothing was published")
        scores = squad_scores([t for t, _, _ in got], self.truths)
        self.report["formats"][fmt] = {
            **scores, "agreement": agreement,
            "exact_match_delta": scores["exact_match"] - self.report["keras"]["exact_match"],
            "outputs": "answer (text sliced from the context), score, start, end (character offsets)",
            "size_bytes": int(size), "file": path,
            "latency_ms": verify.latency_ms(lambda b: call([qs[0]], [cs[0]]), [0], self.latency_runs), **extra}


def exporter_for(run: RunDir, fmts: list[str], decode: dict[str, Any] | None = None) -> Any:
    """The exporter its task plugin names for a finished run, after checking the formats suit it (before any
    model is loaded); an error for tasks that have none."""
    from zoo import tasks

    info = run.info
    cls = tasks.owner_of(info).exporter_class()
    if cls is None:
        exportable = ", ".join(sorted(t.name for t in tasks.all_tasks() if t.exporter is not None))
        raise ExportError(f"{run.path!r} is a {info.task} run; export handles {exportable} runs")
    cls.check_formats(run, fmts)
    if getattr(cls, "takes_decoding", False):
        return cls(run, info, decode)
    if decode:
        raise ExportError("decoding options (--beam) apply to translation runs only")
    return cls(run, info)


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
    fmts = parse_formats(formats)
    run = RunDir.open(run_dir, need=(RunDir.EVAL_SAMPLE,))
    report = exporter_for(run, fmts, decode).export(base, name, fmts, version, latency_runs, extra_report, extra_tflite)
    version_dir = os.path.join(base, name, str(report["version"]))
    report["version_dir"] = version_dir
    try:
        report["models_config"] = publish.write_models_config(base)
    except OSError as exc:
        raise ExportError(f"published {version_dir} (complete and verified), but could not write "
                          f"{os.path.join(base, 'models.config')}: {exc}. Fix the cause; the next export rewrites "
                          "it") from exc
    if report_path:
        os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
        write_json_atomic(report_path, report)
    return version_dir, report
