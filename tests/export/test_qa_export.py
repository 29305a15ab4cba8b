"""The question answering exports: raw question and context strings in, the answer text and its
character offsets out. The SavedModel and the float32 TFLite file answer exactly as the Keras side
does (the SavedModel with TensorFlow and TF Text only, the TFLite file on the LiteRT interpreter with
TF Text's registrar); the int8-weights file is within a few exact-match points; string-quantizing
formats are refused with the reason."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zoo.errors import ExportError
from zoo.export.exporter import export_run

pytestmark = pytest.mark.slow

CHILD = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the TF Text ops; nothing of the zoo is imported)
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
q, c = json.loads(sys.argv[2])
out = fn(question=tf.constant(q), context=tf.constant(c))
print(json.dumps([[a.decode(), int(s), int(e)] for a, s, e in zip(out["answer"].numpy(), out["start"].numpy(),
                                                                   out["end"].numpy())]))
"""

# The TFLite file on the LiteRT interpreter with TF Text's op registrar: the answer text comes out of
# the file itself (TF Text's ByteSplitByOffsets), not sliced by the caller.
TFLITE_CHILD = """
import json, sys
import numpy as np
import tensorflow_text
from ai_edge_litert.interpreter import InterpreterWithCustomOps
interpreter = InterpreterWithCustomOps(model_content=open(sys.argv[1], "rb").read(),
                                       custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
run = interpreter.get_signature_runner("serving_default")
q, c = json.loads(sys.argv[2])
out = run(question=np.array([s.encode() for s in q], dtype=object), context=np.array([s.encode() for s in c],
                                                                                     dtype=object))
print(json.dumps([[a.decode(), int(s), int(e)] for a, s, e in zip(out["answer"], out["start"], out["end"])]))
"""


def test_string_quantizing_formats_are_refused_with_the_reason(qa_run, tmp_path):
    for fmt, reason in (("tflite_int8", "takes strings"), ("tflite_int16x8", "tflite_int8_weights")):
        with pytest.raises(ExportError, match=reason):
            export_run(qa_run.run_dir, str(tmp_path / "exports"), "qa", f"saved_model,{fmt}")
    assert not (tmp_path / "exports").exists()  # refused before anything was written


def test_saved_model_and_tflite_answer_raw_strings_as_keras_does(qa_run, qa_export):
    """On the version the README's `zoo export ... --name qa` command published (a fresh process)."""
    from zoo.answerer import Answerer

    version_dir, report, _ = qa_export
    formats = report["formats"]
    for fmt in ("saved_model", "tflite"):
        assert formats[fmt]["agreement"] == 1.0, fmt  # every eval answer and offset identical
        assert formats[fmt]["exact_match"] == report["keras"]["exact_match"] >= 80
    assert formats["tflite_int8_weights"]["agreement"] >= 0.85
    assert abs(formats["tflite_int8_weights"]["exact_match_delta"]) <= 10
    assert formats["tflite_int8_weights"]["size_bytes"] < 0.35 * formats["tflite"]["size_bytes"]
    assert "Flex" not in formats["tflite"]["ops"] and "TF Text" in formats["tflite"]["ops"]
    questions = ["Where was Ada born?", "In which year was Ada born?", "What did Ada work as?"]
    contexts = ["Ada Lovelace was born in London in 1815 and later worked as a writer. Her friend Charles was "
                "born in Teignmouth in 1791."] * 3
    want = [[a.text, a.start, a.end] for a in Answerer.from_run(qa_run.run_dir)(questions, contexts)]
    out = subprocess.run([sys.executable, "-c", CHILD, version_dir, json.dumps([questions, contexts])],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == want
    assert [contexts[0][s:e] for _, s, e in got] == [a for a, _, _ in got]  # offsets slice the context
    out = subprocess.run([sys.executable, "-c", TFLITE_CHILD, f"{version_dir}/model_float32.tflite",
                          json.dumps([questions, contexts])], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == want
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = f"{version_dir}/assets.extra/tf_serving_warmup_requests"
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert [set(r.predict_log.request.inputs) for r in records] == [{"question", "context"}] * 2
