"""The question answering SavedModel: raw question and context strings in, the answer text and its
character offsets out, identical to the Keras-side answers; it loads with TensorFlow and TF Text only,
carries its warm-up records, and zoo serve answers through it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_saved_model_answers_raw_strings_as_keras_does(qa_run, tmp_path):
    from zoo.answerer import Answerer

    version_dir, report = export_run(qa_run.run_dir, str(tmp_path / "exports"), "qa", "saved_model", latency_runs=2)
    assert report["formats"]["saved_model"]["agreement"] == 1.0  # every eval answer and offset identical
    assert report["formats"]["saved_model"]["exact_match"] == report["keras"]["exact_match"] >= 80
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
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = f"{version_dir}/assets.extra/tf_serving_warmup_requests"
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert [set(r.predict_log.request.inputs) for r in records] == [{"question", "context"}] * 2
