"""zoo launch and the multi-worker manifests, without TensorFlow: the worker command, each worker's
TF_CONFIG, the indexed-Job TF_CONFIG builder, the Kubernetes / Kubeflow manifests, and launcher errors.
The launched job itself (two workers = one device, a killed worker's job resumes) is
tests/layout/test_readme_commands.py::test_launch_block."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from zoo.errors import ConfigError
from zoo.recipes.engine.launch import indexed_job_tf_config, tf_configs, worker_command

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "recipes", "deploy")


def test_worker_command_runs_zoo_here_with_the_multi_worker_strategy():
    cmd = worker_command(["zoo", "train", "image_classify", "--epochs", "2"])
    assert cmd == [sys.executable, "-m", "zoo.cli", "train", "image_classify", "--epochs", "2", "--strategy",
                   "multi_worker"]
    assert worker_command(["zoo", "train", "x", "--strategy=multi_worker"])[-1] == "--strategy=multi_worker"
    assert worker_command(["python", "my_loop.py"]) == ["python", "my_loop.py"]  # any other program as given
    with pytest.raises(ConfigError, match="asks for --strategy mirrored; drop it"):
        worker_command(["zoo", "train", "x", "--strategy", "mirrored"])
    with pytest.raises(ConfigError, match="needs the command to run after --"):
        worker_command([])


def test_data_service_address_reaches_the_train_command_and_names_its_job():
    from zoo.data.service import job_name, pass_files, service_address

    cmd = worker_command(["zoo", "train", "bert_pretrain", "--data", "data/wiki"], "grpc://127.0.0.1:5050")
    assert cmd[-4:] == ["--strategy", "multi_worker", "--set", "train.data_service=grpc://127.0.0.1:5050"]
    with pytest.raises(ConfigError, match="feeds the input pipeline of a `zoo train` command"):
        worker_command(["zoo", "export", "runs/x"], "grpc://127.0.0.1:5050")
    assert service_address("localhost:5050") == service_address("grpc://localhost:5050") == "grpc://localhost:5050"
    for bad in ("localhost", "grpc://:5050", "host:port"):
        with pytest.raises(ConfigError, match="not a tf.data service address"):
            service_address(bad)
    # The trainers of one run share a job; a resumed run (another first step) or another run gets its own.
    assert job_name("runs/a", 0) == job_name(os.path.abspath("runs/a"), 0)
    assert len({job_name("runs/a", 0), job_name("runs/a", 200), job_name("runs/b", 0)}) == 3
    # Each pass is every file once, in its own seeded order; the same passes give the same order.
    files = [f"f{i}" for i in range(5)]
    order = pass_files(files, 42, 3, 2)
    assert sorted(order[:5]) == sorted(order[5:]) == files and order[:5] != order[5:]
    assert pass_files(files, 42, 4, 1) == order[5:]


def test_every_worker_gets_the_cluster_and_its_own_index():
    configs = [json.loads(c) for c in tf_configs(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == {"worker": ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]} for c in configs)


def test_indexed_job_tf_config():
    env = {"JOB_COMPLETION_INDEX": "1", "ZOO_JOB": "zoo-train", "ZOO_SERVICE": "zoo-train", "ZOO_WORKERS": "3"}
    assert json.loads(indexed_job_tf_config(env)) == {
        "cluster": {"worker": [f"zoo-train-{i}.zoo-train:2222" for i in range(3)]},
        "task": {"type": "worker", "index": 1}}
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX not set"):
        indexed_job_tf_config({k: v for k, v in env.items() if k != "JOB_COMPLETION_INDEX"})
    with pytest.raises(ConfigError, match="outside the job's 3 workers"):
        indexed_job_tf_config({**env, "JOB_COMPLETION_INDEX": "3"})


def test_kubernetes_indexed_job_manifest_builds_each_pods_tf_config():
    service, job = yaml.safe_load_all(open(os.path.join(DEPLOY, "multiworker_job.yaml")))
    assert (service["kind"], job["kind"]) == ("Service", "Job")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"] == {"job-name": job["metadata"]
                                                                                      ["name"]}
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == int(env["ZOO_WORKERS"])
    assert pod["subdomain"] == service["metadata"]["name"] == env["ZOO_SERVICE"] and env["ZOO_JOB"] == job["metadata"][
        "name"]
    script = pod["containers"][0]["args"][0]
    assert "python -m zoo.recipes.engine.launch tf-config" in script and "--strategy multi_worker" in script
    # What the pod's first line prints, run here with the manifest's environment.
    out = subprocess.run([sys.executable, "-m", "zoo.recipes.engine.launch", "tf-config"], capture_output=True,
                         text=True, env={**os.environ, **env, "JOB_COMPLETION_INDEX": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cluster"]["worker"] == ["zoo-train-0.zoo-train:2222", "zoo-train-1.zoo-train:2222"]
    assert int(service["spec"]["ports"][0]["port"]) == int(env["ZOO_PORT"])


def test_tfjob_manifest_runs_a_shipped_experiment_multi_worker():
    from zoo.recipes import config_path

    job = yaml.safe_load(open(os.path.join(DEPLOY, "tfjob.yaml")))
    assert job["kind"] == "TFJob" and job["apiVersion"] == "kubeflow.org/v1"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    assert container["name"] == "tensorflow" and worker["replicas"] >= 2
    cmd = container["command"]
    assert cmd[:3] == ["zoo", "train", "bert_classify"] and cmd[cmd.index("--strategy") + 1] == "multi_worker"
    assert yaml.safe_load(open(config_path(cmd[cmd.index("--config") + 1])))["recipe"] == "bert_classify"


def test_launcher_mistakes_are_one_line():
    for args, message in ((["--workers", "0", "--", "zoo", "train", "image_classify"], "at least 1 worker"),
                          (["--workers", "2"], "needs the command to run after --"),
                          (["--workers", "1", "--data-service-workers", "-1", "--", "zoo", "train", "x"],
                           "give 0 (no tf.data service) or more")):
        out = subprocess.run([sys.executable, "-m", "zoo.cli", "launch", *args], capture_output=True, text=True,
                             timeout=120)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            out.stderr


def test_data_service_manifest_points_the_workers_at_the_dispatcher_service():
    service, dispatcher, workers = yaml.safe_load_all(open(os.path.join(DEPLOY, "data_service.yaml")))
    assert (service["kind"], dispatcher["kind"], workers["kind"]) == ("Service", "Deployment", "Deployment")
    port = service["spec"]["ports"][0]["port"]
    d_container = dispatcher["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["selector"] == dispatcher["spec"]["template"]["metadata"]["labels"]
    assert d_container["command"][:4] == ["python", "-m", "zoo.data.service", "dispatcher"]
    assert int(d_container["command"][d_container["command"].index("--port") + 1]) == port
    assert dispatcher["spec"]["replicas"] == 1
    script = workers["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f"python -m zoo.data.service worker --dispatcher {service['metadata']['name']}:{port}" in script
    assert "$POD_IP" in script  # trainers reach each worker at its own pod address
    comment = open(os.path.join(DEPLOY, "data_service.yaml")).read()
    assert f"--set train.data_service=grpc://{service['metadata']['name']}:{port}" in comment
    out = subprocess.run([sys.executable, "-m", "zoo.data.service", "local", "--workers", "0", "--port", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == "error: --workers 0: the service needs at least 1 worker"
