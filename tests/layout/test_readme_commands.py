"""Every command the README shows, run as a user runs it, on tiny data.

The README's command lines are read from the file and each must be one of the commands run below
(the question answering block's: test_readme_qa.py), so a new README command without a smoke test
fails the suite. A command runs in a fresh `zoo`
process (:func:`zoo`) where a fresh process is the point: everything that loads what an earlier
command wrote (export, translate, answer, compress, serve, --init / --teacher from a run), where a
class registered by another test's import would hide a missing registration (that is how `zoo export`
of every translation run was once broken in a fresh process); signals; launch; and the first command
of each family, whose stderr must be free of TensorFlow's start-up noise. The other `zoo train`
lines run through the CLI's own ``main(argv)`` in this process (:func:`zoo_here`): the same parser,
code and output, without ~9 s of TensorFlow import each.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import MINILM
from tests.datasets import (
    TRAIN_WORDS,
    write_number_pairs,
    write_sentiment,
)
from tests.layout.readme import COVERED, NOISE, ROOT, TINY, ZOO, in_qa_block, readme_commands, zoo, zoo_here
from tests.waits import wait_until
from zoo.rundir import RunDir


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch directory laid out as the README assumes: photos/, shards/, corpus/, train.tsv, dev.tsv..."""
    from PIL import Image

    from zoo.data.images import write_image_tfrecord

    root = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    encoded, labels = [], []
    for label, name in enumerate(("circle", "square", "cross")):
        os.makedirs(root / "photos" / name)
        for i in range(8):
            pixels = (rng.random((12, 12, 3)) * 80 + label * 80).astype(np.uint8)
            Image.fromarray(pixels).save(root / "photos" / name / f"{i}.png")
            with open(root / "photos" / name / f"{i}.png", "rb") as fh:
                encoded.append(fh.read())
            labels.append(label)
    os.makedirs(root / "shards")
    write_image_tfrecord(str(root / "shards" / "train-0.tfrecord"), encoded[::2] + encoded[1::4],
                         labels[::2] + labels[1::4])
    write_image_tfrecord(str(root / "shards" / "test.tfrecord"), encoded[3::4], labels[3::4])
    os.makedirs(root / "corpus")
    words = TRAIN_WORDS[0] + TRAIN_WORDS[1]
    text = rng.permutation(60).tolist()
    (root / "corpus" / "a.txt").write_text("\n".join(f"the film {i} was {words[i % len(words)]} and long"
                                                     for i in text) + "\n")
    write_sentiment(root / "train.tsv", 48, TRAIN_WORDS, 0)
    write_sentiment(root / "dev.tsv", 16, TRAIN_WORDS, 1)
    numbers = list(range(200))
    random.Random(0).shuffle(numbers)
    write_number_pairs(root / "pairs-train.tsv", numbers[:160])
    write_number_pairs(root / "pairs-dev.tsv", numbers[160:])
    return root


def _metrics(run_dir) -> dict:
    with open(RunDir(str(run_dir)).metrics_path) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_use_block(work):
    out = zoo("zoo list", ["list"], work)
    assert "resnet50" in out and "25,557,032" in out and "digits_small_cnn" in out
    assert re.search(r"question_answering +bert_qa ", out) and re.search(r"distillation +distill ", out)  # tasks
    zoo("zoo train image_classify", ["train", "image_classify", "--run-dir", "runs/default", "--epochs", "2", *TINY],
        work)
    assert _metrics(work / "runs" / "default")["epochs_completed"] == 2
    out = zoo_here("zoo train image_classify --config digits_small_cnn",
              ["train", "image_classify", "--config", "digits_small_cnn", "--run-dir", "runs/digits", "--epochs", "3",
               "--json", "--quiet"], work)
    assert json.loads(out.stdout)["final"]["test_accuracy"] > 0.6  # 3 epochs of the real digits
    zoo_here("zoo train image_classify --data photos/ --model resnet18 --set model.stem=small --epochs 30",
        ["train", "image_classify", "--data", "photos/", "--model", "resnet18", "--set", "model.stem=small",
         "--epochs", "1", "--run-dir", "runs/photos", *TINY], work)
    assert RunDir(str(work / "runs" / "photos")).info.class_names == ("circle", "cross", "square")
    zoo_here("zoo train image_classify --data 'shards/train-*.tfrecord' --eval-data shards/test.tfrecord",
        ["train", "image_classify", "--data", "shards/train-*.tfrecord", "--eval-data", "shards/test.tfrecord",
         "--epochs", "1", "--run-dir", "runs/shards", *TINY], work)
    zoo_here("zoo train image_classify --strategy mirrored --cpu-devices 2 --precision mixed_bfloat16",
        ["train", "image_classify", "--strategy", "mirrored", "--cpu-devices", "2", "--precision", "mixed_bfloat16",
         "--epochs", "1", "--run-dir", "runs/mirrored", *TINY], work)
    assert _metrics(work / "runs" / "mirrored")["replicas"] == 2
    out = zoo_here("zoo train image_classify --xla --precision mixed_bfloat16",
              ["train", "image_classify", "--xla", "--precision", "mixed_bfloat16", "--epochs", "1",
               "--run-dir", "runs/xla", *TINY], work)
    assert _metrics(work / "runs" / "xla")["precision"] == "mixed_bfloat16"
    assert "does not use the bfloat16 matmul kernels" in out  # the warning the README promises
    zoo_here("zoo train image_classify --config runs/<run>/config.yaml --set train.optimizer.name=adamw",
        ["train", "image_classify", "--config", "runs/digits/config.yaml", "--set", "train.optimizer.name=adamw",
         "--epochs", "1", "--run-dir", "runs/adamw", "--quiet"], work)
    out = zoo("zoo export runs/<run> --to exports --name digits "
              "--formats saved_model,tflite,tflite_dynamic,tflite_int8",
              ["export", "runs/digits", "--to", "exports", "--name", "digits", "--formats",
               "saved_model,tflite,tflite_dynamic,tflite_int8"], work)
    assert "published exports/digits/1" in out and "tflite_int8" in out
    out = zoo("python -m zoo.recipes.image_classify --help", ["--help"], work, python_m="zoo.recipes.image_classify")
    assert "--config" in out and "--data" in out
    out = zoo_here("zoo train image_classify --set train.optimizer.name=adamm",
              ["train", "image_classify", "--set", "train.optimizer.name=adamm"], work, ok=False)
    assert "did you mean 'adam'" in out


@pytest.mark.slow
def test_bert_block(work):
    zoo_here("zoo train bert_pretrain --data 'corpus/*.txt' --set model.preset=bert_tiny",
        ["train", "bert_pretrain", "--data", "corpus/*.txt", "--set", "model.preset=bert_tiny", "--epochs", "2",
         "--set", "data.sequence_length=16", "--run-dir", "runs/pretrain", *TINY], work)
    out = zoo_here("zoo train bert_pretrain --data 'corpus/*.txt' --set data.streaming=true --set train.steps=100000 "
                   "--set train.checkpoint_every_steps=1000 --set train.validation_every_steps=5000",
                   ["train", "bert_pretrain", "--data", "corpus/*.txt", "--set", "data.streaming=true", "--set",
                    "train.steps=6", "--set", "train.checkpoint_every_steps=2", "--set",
                    "train.validation_every_steps=4", "--set", "model.preset=bert_tiny", "--set",
                    "data.sequence_length=16", "--set", "train.schedule.warmup_steps=1", "--set",
                    "data.validation_split=0.5", "--run-dir", "runs/steps",
                    *TINY, "--json"], work)
    steps = json.loads(out.stdout)
    assert steps["steps_completed"] == 6 and [e["step"] for e in steps["epochs"]] == [2, 4, 6]
    assert [("val_loss" in e) for e in steps["epochs"]] == [False, True, False]
    out = zoo_here("zoo data prepare bert_pretrain --data 'corpus/*.txt' --out data/wiki "
                   "--set data.sequence_length=128",
                   ["data", "prepare", "bert_pretrain", "--data", "corpus/*.txt", "--out", "data/wiki", "--set",
                    "data.sequence_length=32", "--set", "data.validation_split=0.2", "--quiet"], work)
    assert "packed" in out and "zoo train bert_pretrain --data data/wiki" in out
    out = zoo_here("zoo train bert_pretrain --data data/wiki --set train.steps=100000",
                   ["train", "bert_pretrain", "--data", "data/wiki", "--set", "train.steps=4", "--set",
                    "model.preset=bert_tiny", "--set", "train.schedule.warmup_steps=1", "--run-dir", "runs/prepared",
                    *TINY, "--json"], work)
    assert json.loads(out.stdout)["steps_completed"] == 4
    zoo_here("zoo train bert_classify --data train.tsv --eval-data dev.tsv --init hf:path/to/hf_bert_dir",
        ["train", "bert_classify", "--data", "train.tsv", "--eval-data", "dev.tsv", "--init", f"hf:{MINILM}",
         "--epochs", "1", "--set", "data.sequence_length=16", "--run-dir", "runs/minilm", *TINY], work)
    zoo("zoo train bert_classify --data train.tsv --init runs/<bert_pretrain run>",
        ["train", "bert_classify", "--data", "train.tsv", "--init", "runs/pretrain", "--epochs", "2",
         "--run-dir", "runs/classify", *TINY], work)
    out = zoo("zoo export runs/<run> --to exports --name sentiment --formats "
              "saved_model,tflite,tflite_int8_weights,tflite_dynamic",
              ["export", "runs/classify", "--to", "exports", "--name", "sentiment", "--formats",
               "saved_model,tflite,tflite_int8_weights,tflite_dynamic"], work)
    assert "published exports/sentiment/1" in out
    zoo("zoo train distill --teacher runs/<bert_classify run> --student text_cnn --data train.tsv --eval-data dev.tsv",
        ["train", "distill", "--teacher", "runs/classify", "--student", "text_cnn", "--data", "train.tsv",
         "--eval-data", "dev.tsv", "--epochs", "2", "--run-dir", "runs/distilled", *TINY], work)


@pytest.mark.slow
def test_seq2seq_block(work):
    zoo_here("zoo train translate --data train.tsv --eval-data dev.tsv --set model.preset=transformer_small",
        ["train", "translate", "--data", "pairs-train.tsv", "--eval-data", "pairs-dev.tsv", "--set",
         "model.preset=transformer_small", "--epochs", "2", "--set", "data.vocab_size=200", "--set",
         "data.max_target_length=8", "--set", "data.max_source_length=8", "--run-dir", "runs/mt", *TINY], work)
    out = zoo('zoo translate runs/<run> "some source sentence" --beam 4',
              ["translate", "runs/mt", "342", "17", "--beam", "4"], work)
    assert len(out.stdout.splitlines()) == 2  # one translation per source (possibly empty after 2 epochs)
    zoo_here('zoo translate runs/<run> "..." --method top_p --top-p 0.9 --temperature 0.8 --seed 1',
        ["translate", "runs/mt", "342", "--method", "top_p", "--top-p", "0.9", "--temperature", "0.8", "--seed", "1"],
        work)
    out = zoo("zoo export runs/<run> --to exports --name mt --formats saved_model --beam 4",
              ["export", "runs/mt", "--to", "exports", "--name", "mt", "--formats", "saved_model", "--beam", "4"], work)
    assert "published exports/mt/1" in out and "decoding: beam" in out


@pytest.mark.slow
def test_compression_block(work):
    if not RunDir(str(work / "runs" / "digits")).is_finished:
        pytest.fail("test_use_block must run first (it trains runs/digits)")
    out = zoo("zoo compress qat runs/<cnn run> --epochs 2 --to exports",
              ["compress", "qat", "runs/digits", "--epochs", "1", "--to", "exports"], work)
    assert "QAT int8 TFLite" in out and "published" in out
    out = zoo("zoo compress prune runs/<cnn run> --sparsity 0.8 --to exports",
              ["compress", "prune", "runs/digits", "--sparsity", "0.8", "--epochs", "1", "--to", "exports"], work)
    assert "gzip size" in out


@pytest.mark.slow
def test_serving_block(work):
    """Both `zoo serve` lines on what the blocks above exported, queried as the README's curl lines do
    (and with TF Serving's gRPC client); SIGTERM ends each with exit 0."""
    import grpc
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.export.serve_process import ServerProcess

    if not os.path.isdir(work / "exports" / "sentiment"):
        pytest.fail("test_bert_block must run first (it exports sentiment)")
    COVERED.add("zoo serve exports")
    with ServerProcess(["exports", "--port", "0", "--rest-api-port", "0"], work, str(work / "serve1.log")) as server:
        assert any(line.split()[:2] == ["sentiment", "1"] for line in server.stdout), server.stdout
        with httpx.Client(base_url=server.rest_url, timeout=60) as http:
            pred = http.post("/v1/models/sentiment:predict", json={"instances": ["a great film"]})
            assert pred.status_code == 200, pred.text
            assert pred.json()["predictions"][0]["class_name"] in ("positive", "negative")
            status = http.get("/v1/models/sentiment").json()["model_version_status"]
            assert status[0]["state"] == "AVAILABLE"
            meta = http.get("/v1/models/sentiment/metadata").json()
            assert "serving_default" in meta["metadata"]["signature_def"]["signature_def"]
            v2 = http.post("/v2/models/sentiment/infer", json={"inputs": [
                {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a great film"]}]})
            assert {o["name"]: o["data"] for o in v2.json()["outputs"]}["class_name"] == \
                [pred.json()["predictions"][0]["class_name"]]
            assert http.get("/v2/health/ready").status_code == 200
            assert "zoo_serve_requests_total" in http.get("/monitoring/prometheus/metrics").text
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mt"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"342"], dtype=object)))
        reply = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_address)).Predict(
            request, timeout=60)
        assert tf.make_ndarray(reply.outputs["translation"]).shape == (1,)
    assert server.returncode == 0 and "zoo serve: stopped" in server.log
    assert not [n for n in NOISE if n in server.log], server.log[-2000:]

    (work / "batching.txt").write_text(open(os.path.join(ROOT, "export", "deploy", "batching.txt")).read())
    COVERED.add("zoo serve --model-config-file exports/models.config --batching-parameters-file batching.txt")
    with ServerProcess(["--model-config-file", "exports/models.config", "--batching-parameters-file", "batching.txt",
                        "--port", "0", "--rest-api-port", "0"], work, str(work / "serve2.log")) as server:
        assert any("'max_batch_size': 32" in line for line in server.stdout), server.stdout
        x = np.zeros((1, 8, 8, 1), np.float32).tolist()
        r = httpx.post(f"{server.rest_url}/v1/models/digits:predict", json={"instances": x}, timeout=60)
        assert r.status_code == 200, r.text
    assert server.returncode == 0


@pytest.mark.slow
def test_every_model_family_loads_in_a_fresh_process(work):
    """zoo.load of each run's model.keras (compiled: optimizer, schedule and loss too) in a new interpreter."""
    runs = {"cnn": "runs/digits", "resnet": "runs/photos", "bert_mlm": "runs/pretrain", "bert_classifier":
            "runs/classify", "seq2seq": "runs/mt", "distilled_text_cnn": "runs/distilled",
            "pruned_cnn": "runs/digits/compressed/prune-0.80"}
    missing = [k for k, v in runs.items() if not RunDir(str(work / v)).is_finished]
    assert not missing, f"earlier README tests did not produce {missing}"
    code = ("import sys, zoo\n"
            "for path in sys.argv[1:]:\n"
            "    model = zoo.load(path)\n"
            "    raw = getattr(model, 'preprocessor', None) is not None\n"
            "    shape = 'x'.join(map(str, model.predict(['a great film'], verbose=0).shape)) if raw else '-'\n"
            "    print(type(model).__name__, getattr(model, 'optimizer', None) is not None, model.count_params(), "
            "shape)\n")
    proc = subprocess.run([sys.executable, "-c", code, *runs.values()], cwd=str(work), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(runs)
    assert [ln.split()[0] for ln in lines][2:5] == ["BertMaskedLM", "BertClassifier", "Seq2SeqTransformer"]
    # Trained runs load compiled (optimizer, schedule, loss restored); the pruned copy is saved uncompiled.
    assert [ln.split()[1] for ln in lines] == ["True"] * (len(runs) - 1) + ["False"]
    # The text classifiers own their preprocessor: raw strings in, one row of logits per string.
    assert [ln.split()[3] for ln in lines] == ["-", "-", "-", "1x2", "-", "1x2", "-"], lines


@pytest.mark.slow
def test_errors_are_one_line_and_debug_shows_the_cause(work):
    out = zoo("zoo export runs/nowhere", ["export", "runs/nowhere", "--to", "exports"], work, ok=False)
    assert out.strip().splitlines() == ["error: run dir 'runs/nowhere' does not exist; pass the directory `zoo train` "
                                        "wrote (runs/<recipe>-<time> by default)"]
    COVERED.discard("zoo export runs/nowhere")
    out = subprocess.run([*ZOO, "export", "runs/digits", "--to", "exports", "--formats", "tflite_int4", "--debug"],
                         cwd=str(work), capture_output=True, text=True, timeout=300).stderr
    assert "Traceback" in out and "UnknownNameError" in out and "did you mean 'tflite_int8'" in out


@pytest.mark.slow
def test_optimizer_block(work):
    zoo_here("zoo train image_classify --set train.optimizer.name=lion --set train.optimizer.learning_rate=1e-4",
        ["train", "image_classify", "--set", "train.optimizer.name=lion", "--set", "train.optimizer.learning_rate=1e-4",
         "--epochs", "1", "--run-dir", "runs/lion", *TINY], work)
    assert _metrics(work / "runs" / "lion")["epochs_completed"] == 1
    zoo_here("zoo train image_classify --set train.optimizer.name=adagrad "
        "--set train.optimizer.options.initial_accumulator_value=0.5",
        ["train", "image_classify", "--set", "train.optimizer.name=adagrad", "--set",
         "train.optimizer.options.initial_accumulator_value=0.5", "--epochs", "1", "--run-dir", "runs/adagrad", *TINY],
        work)
    assert "initial_accumulator_value: 0.5" in open(RunDir(str(work / "runs" / "adagrad")).config_path).read()
    zoo_here("zoo train bert_pretrain --data 'corpus/*.txt' --set train.optimizer.name=lamb "
        "--set train.gradient_accumulation_steps=4",
        ["train", "bert_pretrain", "--data", "corpus/*.txt", "--set", "train.optimizer.name=lamb", "--set",
         "train.gradient_accumulation_steps=4", "--set", "model.preset=bert_tiny", "--set", "data.sequence_length=16",
         "--epochs", "2", "--run-dir", "runs/lamb", *TINY], work)
    assert _metrics(work / "runs" / "lamb")["epochs_completed"] == 2
    out = zoo_here("zoo train image_classify (a hyper-parameter the optimizer does not have)",
              ["train", "image_classify", "--set", "train.optimizer.name=lion", "--set", "train.optimizer.epsilon=1"],
              work, ok=False)
    COVERED.discard("zoo train image_classify (a hyper-parameter the optimizer does not have)")
    assert "epsilon=1.0 does not apply to the lion optimizer" in out


def _worker_pid(launcher_pid: int, index: int) -> int | None:
    """The pid of worker ``index`` among a zoo launch process's children (read from /proc)."""
    try:
        children = open(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read().split()
    except OSError:
        return None
    for pid in children:
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if f'"index": {index}}}' in environ:
            return int(pid)
    return None


@pytest.mark.slow
def test_launch_block(work):
    """zoo launch --workers 2 trains as one device does (same global batches: weights to 1e-5); a worker
    SIGKILLed mid-run stops the job with one error line, and the same command resumes and finishes it."""
    import zoo as zoo_pkg

    settings = ["--epochs", "2", "--set", "model.dropout=0", "--set", "train.optimizer.name=sgd", "--set",
                "train.optimizer.learning_rate=0.05", *TINY]
    out = zoo("zoo launch --workers 2 -- zoo train image_classify --run-dir runs/mw",
              ["launch", "--workers", "2", "--", "zoo", "train", "image_classify", "--run-dir", "runs/mw", *settings],
              work)
    assert "[worker 0]" in out and "worker 0 is the chief" in out
    assert _metrics(work / "runs" / "mw")["replicas"] == 2
    zoo_here("zoo train image_classify", ["train", "image_classify", "--run-dir", "runs/one", *settings], work)
    one = zoo_pkg.load(RunDir(str(work / "runs" / "one")).model_path, compile=False).get_weights()
    two = zoo_pkg.load(RunDir(str(work / "runs" / "mw")).model_path, compile=False).get_weights()
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(one, two))
    assert [e["loss"] for e in _metrics(work / "runs" / "mw")["epochs"]] == pytest.approx(
        [e["loss"] for e in _metrics(work / "runs" / "one")["epochs"]], abs=1e-5)  # every epoch, not just the end
    assert not os.path.exists(RunDir(str(work / "runs" / "mw")).workers_root)  # the non-chief cleaned up

    # Kill and resume, against an uninterrupted two-worker run of the same length (same reduction order).
    longer = [*settings, "--epochs", "3"]
    subprocess.run([*ZOO, "launch", "--workers", "2", "--", "zoo", "train", "image_classify", "--run-dir",
                    "runs/mw-ref", *longer], cwd=str(work), capture_output=True, text=True, timeout=600, check=True)
    reference = zoo_pkg.load(RunDir(str(work / "runs" / "mw-ref")).model_path, compile=False).get_weights()
    cmd = [*ZOO, "launch", "--workers", "2", "--", "zoo", "train", "image_classify", "--run-dir", "runs/mw-kill",
           *longer]
    launcher = subprocess.Popen(cmd, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunDir(str(work / "runs" / "mw-kill"))
    # Both workers have saved epoch 1 (each keeps its own state; the job resumes at an epoch both saved).
    wait_until(lambda: (run.backup_states() and run.worker_dir("worker-1").backup_states())
               or launcher.poll() is not None, "both workers to save epoch 1")
    victim = _worker_pid(launcher.pid, 1)
    assert victim is not None and launcher.poll() is None, launcher.stderr.read()[-2000:]
    os.kill(victim, signal.SIGKILL)
    _, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 2, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: worker 1 was killed by signal 9; the other workers were "
                                                   "stopped. Run the same command again"), err[-2000:]
    assert "Traceback" not in err
    assert not run.is_finished  # the kill landed mid-run
    again = subprocess.run(cmd, cwd=str(work), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = _metrics(work / "runs" / "mw-kill")
    assert len(metrics["resumes"]) == 1 and metrics["resumes"][0]["epoch"] >= 2  # saved epochs were kept
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3] and metrics["epochs_completed"] == 3
    resumed = zoo_pkg.load(run.model_path, compile=False).get_weights()
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(reference, resumed))  # as if never killed

    # A tf.data service (a dispatcher and two workers in one more process) runs the job's input pipeline.
    if not (work / "data" / "wiki" / "manifest.json").exists():  # test_bert_block prepares it; alone, do it here
        from tests.cli import run_cli

        code, _, err = run_cli(["data", "prepare", "bert_pretrain", "--data", "corpus/*.txt", "--out", "data/wiki",
                                "--set", "data.sequence_length=32", "--set", "data.validation_split=0.2"], work)
        assert code == 0, err
    out = zoo("zoo launch --workers 2 --data-service-workers 2 -- zoo train bert_pretrain --data data/wiki "
              "--set train.steps=100000",
              ["launch", "--workers", "2", "--data-service-workers", "2", "--", "zoo", "train", "bert_pretrain",
               "--data", "data/wiki", "--set", "train.steps=4", "--set", "train.checkpoint_every_steps=2", "--set",
               "model.preset=bert_tiny", "--set", "train.batch_size=8", "--set", "train.schedule.warmup_steps=1",
               "--set", "train.tensorboard=false", "--run-dir", "runs/service"], work)
    assert re.search(r"zoo launch: tf.data service at grpc://127.0.0.1:\d+ with 2 worker\(s\)", out), out[-3000:]
    # Both trainers read one job of the service.
    jobs = re.findall(r"\[worker (\d)\] INFO input: tf.data service grpc://127.0.0.1:\d+, job (\S+),", out)
    assert sorted(w for w, _ in jobs) == ["0", "1"] and len({j for _, j in jobs}) == 1, out[-3000:]
    service_run = _metrics(work / "runs" / "service")
    assert service_run["steps_completed"] == 4 and service_run["replicas"] == 2
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid).startswith(
        f"{sys.executable} -m zoo.data.service local")]  # the launcher stopped the service it started


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_tpu_command_says_there_is_no_tpu_here(work):
    """The README's TPU VM command, on a machine without a TPU: one error line that says what to do."""
    out = zoo_here("zoo train bert_pretrain --data 'gs://bucket/corpus/*.txt' --strategy tpu --precision "
                   "mixed_bfloat16 --set train.optimizer.name=lamb",
              ["train", "bert_pretrain", "--data", "gs://bucket/corpus/*.txt", "--strategy", "tpu", "--precision",
               "mixed_bfloat16", "--set", "train.optimizer.name=lamb", "--run-dir", "runs/tpu"], work, ok=False)
    lines = out.strip().splitlines()
    assert lines[-1].startswith("error: ") and "TPU" in lines[-1] and "run on a TPU VM" in lines[-1], out
    assert not os.path.exists(work / "runs" / "tpu")


@pytest.mark.slow
def test_every_readme_command_is_run_here():
    """Runs last in this module: each README command line is one of the commands the tests above ran
    (the question answering block's lines: test_readme_qa.py)."""
    commands = [c for c in readme_commands() if not in_qa_block(c)]
    assert len(commands) >= 20, commands
    missing = [c for c in commands if c not in COVERED]
    assert not missing, "README commands without a fresh-process smoke test:\n" + "\n".join(missing)


@pytest.mark.slow
def test_os_errors_and_ctrl_c_end_in_one_line(work):
    (work / "a_file").write_text("not a directory")
    assert _one_error_line_here(["train", "image_classify", "--run-dir", "a_file/run", "--epochs", "1", "--quiet"],
                                work, 1) == "error: [Errno 20] Not a directory: 'a_file/run'"
    assert not os.path.exists(work / "a_file" / "run")
    # Ctrl-C in the middle of training: one line that says how to resume, exit code 130.
    run_dir = work / "runs" / "interrupted"
    proc = subprocess.Popen([*ZOO, "train", "image_classify", "--run-dir", str(run_dir), "--epochs", "200", "--quiet",
                             "--set", "train.tensorboard=false"], cwd=str(work), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Wait for the first epoch's resume state (metrics.json is written just before it, so it is not the sign).
    wait_until(lambda: RunDir(str(run_dir)).backup_states() or proc.poll() is not None, "the first epoch's state")
    assert proc.poll() is None, proc.stderr.read()[-2000:]  # 200 epochs: far from done
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == [
        "error: interrupted; run the same command again to resume from the last completed epoch"], err[-2000:]
    assert RunDir(str(run_dir)).backup_states()  # there is a state to resume from
    assert not RunDir(str(run_dir)).is_finished  # Ctrl-C landed mid-run


def _one_error_line(args: list[str], cwd, code: int) -> str:
    """Run a zoo command that must fail: exit ``code``, no traceback, and one ``error:`` line, the last (log lines
    of the work done before the failure may come first)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([*ZOO, *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr[-2000:]
    errors = [ln for ln in lines if ln.startswith("error")]
    assert "Traceback" not in proc.stderr and errors == lines[-1:] and errors[0].startswith("error: "), \
        proc.stderr[-2000:]
    return lines[-1]


def _one_error_line_here(args: list[str], cwd, code: int) -> str:
    """As :func:`_one_error_line`, for a command that runs in this process (:func:`zoo_here`)."""
    import contextlib
    import io

    from zoo.cli import main

    err = io.StringIO()
    here = os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            got = main(args)
    finally:
        os.chdir(here)
    lines = err.getvalue().strip().splitlines()
    assert got == code and "Traceback" not in err.getvalue(), err.getvalue()[-2000:]
    assert [ln for ln in lines if ln.startswith("error")] == lines[-1:] and lines[-1].startswith("error: "), lines
    return lines[-1]


@pytest.mark.slow
def test_careless_user_mistakes_end_in_one_error_line(work):
    # A run dir where nothing may be created (a PermissionError, or read-only file system where /sys is).
    line = _one_error_line_here(["train", "image_classify", "--run-dir", "/sys/zoo-run", "--epochs", "1", "--quiet"],
                                work, 1)
    assert "/sys/zoo" in line
    # A Hugging Face directory whose config.json does not match its tensors.
    bad = work / "bad_hf"
    bad.mkdir()
    for name in ("model.safetensors", "vocab.txt"):
        os.symlink(os.path.join(MINILM, name), bad / name)
    cfg = json.load(open(os.path.join(MINILM, "config.json")))
    for change, message in (({"hidden_size": 768, "intermediate_size": 3072}, "shape mismatches"),
                            ({"hidden_size": 256}, "hidden_dim=256 is not divisible by num_heads=12")):
        (bad / "config.json").write_text(json.dumps({**cfg, **change}))
        line = _one_error_line_here(["train", "bert_classify", "--data", "train.tsv", "--init", "hf:bad_hf",
                                     "--epochs", "1", "--run-dir", "runs/bad_hf", "--quiet"], work, 2)
        assert message in line and "bad_hf" in line, line
        assert not os.path.exists(work / "runs" / "bad_hf")  # refused before the run dir was written
    # models.config cannot be written after a version was published: the line says the version exists.
    (work / "exports_cfg" / "models.config").mkdir(parents=True)
    line = _one_error_line(["export", "runs/digits", "--to", "exports_cfg", "--name", "digits", "--formats", "tflite"],
                           work, 2)
    assert "published exports_cfg/digits/1 (complete and verified), but could not write" in line
    assert os.path.isfile(work / "exports_cfg" / "digits" / "1" / "model_float32.tflite")


@pytest.mark.slow
def test_json_alone_prints_only_json_on_stdout(work):
    """--json without --quiet: progress bars and log lines go to stderr, stdout parses as one JSON document."""
    out = zoo_here("zoo train image_classify --json", ["train", "image_classify", "--epochs", "2", "--run-dir",
                                                       "runs/json", "--json"], work)
    COVERED.discard("zoo train image_classify --json")
    metrics = json.loads(out.stdout)
    assert metrics["epochs_completed"] == 2 and 0 < metrics["final"]["test_accuracy"] <= 1
