"""`make bench`: every benchmark in one go, gathered into one report of side-by-side ratios.

Runs each benchmark script in a fresh process, one after the other (never two TensorFlow jobs at
once), then writes into ``--out`` (default bench-out/):

* ``BENCHMARKS.md``: one row per ratio (what is compared with what, the ratio, the target where the
  project has one, and the two measured values), with the CPU model and its flags (avx2, avx512f,
  avx512_bf16, amx) and the package versions;
* ``bench.json``: the same rows plus every script's own JSON;
* ``bench.png``: the ratios as bars (log scale, 1.0 marked).

    python benchmarks/all.py [--quick] [--out bench-out] [--only bert,qa]

``--quick`` runs every script at tiny sizes (seconds each), all in this one process (one TensorFlow
import instead of six; the numbers are not figures anyway): the smoke test of the suite runs it and
checks that every row is produced, not what the numbers are. A full run keeps a fresh process per
script, so no script's measurements carry another's allocations, threads or compiled graphs.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("tensorflow", "keras", "keras-hub", "tensorflow-text", "ai-edge-litert", "numpy")

# script -> (its JSON file in --out, its --quick arguments, its full arguments)
SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "training": ("training.json", ["--quick"], []),
    "bert": ("bert.json", ["--quick"], []),
    "seq2seq": ("seq2seq.json", ["--quick"], []),
    "qa": ("qa.json", ["--quick"], []),
    "serve": ("serve.json", ["--quick"], []),
    "data": ("data.json", ["--quick"], []),
}
SCRIPT_FILES = {"training": "run.py", "bert": "bert.py", "seq2seq": "seq2seq.py", "qa": "qa.py", "serve": "serve.py",
                "data": "data.py"}


def machine() -> dict[str, Any]:
    """CPU model, cores, the flags that decide TensorFlow's speed, and the versions of the stack."""
    from importlib import metadata

    text = ""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        pass
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": model, "cores": os.cpu_count(), "flags": {f: f in flags for f in FLAGS}, "packages": versions}


def row(benchmark: str, name: str, ratio: float, meaning: str, measured: str, target: str = "") -> dict[str, Any]:
    return {"benchmark": benchmark, "row": name, "ratio": float(ratio), "meaning": meaning, "measured": measured,
            "target": target}


def training_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in d["training"]:
        if r["precision"] == "float32" and not r["xla"]:
            continue
        out.append(row("training", f"{r['model']} {r['precision']}{' + XLA' if r['xla'] else ''} vs float32",
                       r["time_vs_float32"], "step time ratio (below 1: faster)",
                       f"{r['seconds_per_step'] * 1e3:.2f} ms/step"))
    for r in d["pipeline"]:
        out.append(row("input pipeline", f"image_classify stream{' + augmentation' if r['augment'] else ''} vs cached",
                       r["pipeline_vs_cached"], "step time ratio", f"{r['pipeline_ms']:.2f} vs {r['cached_ms']:.2f} "
                       "ms/step", "<= 1.05"))
    formats = d["export"]["formats"]
    float_ms = formats["tflite"]["p50_ms"]
    for fmt in ("tflite_float16", "tflite_dynamic", "tflite_int8"):
        if fmt in formats:
            f = formats[fmt]
            out.append(row("export", f"digits {fmt} vs float32 TFLite: size", f["size_ratio"], "file size ratio",
                           f"accuracy {f['accuracy']:.4f}"))
            out.append(row("export", f"digits {fmt} vs float32 TFLite: latency", f["p50_ms"] / float_ms,
                           "p50 latency ratio, batch 1", f"{f['p50_ms']:.3f} vs {float_ms:.3f} ms"))
    return out


def bert_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in d["rows"]:
        label = f"{d['preset']} {r['precision']}{' + XLA' if r['xla'] else ''} ({r['optimizer']} optimizer)"
        out.append(row("bert training", f"{label}: zoo vs keras-hub", r["zoo_vs_keras_hub"], "step time ratio",
                       f"{r['zoo_s']:.3f} vs {r['keras_hub_s']:.3f} s/step",
                       "<= 0.85" if r["precision"] == "float32" and r["optimizer"] == "own" else ""))
        if r["optimizer"] == "own":
            out.append(row("bert training", f"{label}: FLOP/s vs float32 matmul", r["zoo_vs_float32_matmul"],
                           "fraction of the machine's matmul rate", f"{r['zoo_gflops']:.0f} of "
                           f"{d['matmul_gflops']['float32']:.0f} GFLOP/s", ">= 0.75" if r["precision"] == "float32"
                           else ""))
    if "own_matmul_vs_float32_matmul" in d:
        own = d["own_matmul_seconds"]
        out.append(row("bert training", f"{d['preset']} the step's own matmuls alone: FLOP/s vs float32 matmul",
                       d["own_matmul_vs_float32_matmul"], "bound on the FLOP/s fraction at these shapes",
                       f"{own['float32']:.3f} s float32, {own['bfloat16']:.3f} s bfloat16", ""))
        for r in d["rows"]:
            if r["optimizer"] == "own" and not r["xla"]:
                out.append(row("bert training", f"{d['preset']} {r['precision']}: own matmuls alone vs the step",
                               r["own_matmuls_vs_step"], "matmul share of the step time", f"{r['zoo_s']:.3f} s/step",
                               ""))
    bf16 = next((r for r in d["rows"] if r["precision"] == "mixed_bfloat16" and not r["xla"]), None)
    if bf16:
        out.append(row("bert training", f"{d['preset']} mixed_bfloat16 vs float32: speed-up",
                       1 / bf16["zoo_vs_zoo_float32"], "float32 step time / bfloat16 step time",
                       f"{bf16['zoo_s']:.3f} s/step", ">= 1.5 with bf16 units"))
    bf16_xla = next((r for r in d["rows"] if r["precision"] == "mixed_bfloat16" and r["xla"]), None)
    if bf16 and bf16_xla:
        out.append(row("bert training", f"{d['preset']} mixed_bfloat16 + XLA vs without XLA: step time",
                       bf16_xla["zoo_vs_zoo_float32"] / bf16["zoo_vs_zoo_float32"], "step time ratio (the recipe "
                       "warns against XLA with bfloat16 on CPU)", f"{bf16_xla['zoo_s']:.3f} s/step", ""))
    return out


def seq2seq_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = [row("decoding", f"{d['preset']} greedy batch {r['batch']}: cached vs uncached", r["speedup"],
               "tokens/s ratio", f"{r['cached_tokens_per_s']:.0f} vs {r['uncached_tokens_per_s']:.0f} tok/s")
           for r in d["decode"]]
    first, last = d["per_token"][0], d["per_token"][-1]
    out.append(row("decoding", f"{d['preset']} ms/token at {last['tokens']} vs {first['tokens']} tokens",
                   last["vs_16"], "time per token ratio (1: flat)", f"{last['ms_per_token']:.2f} ms/token"))
    out.append(row("decoding", f"{d['preset']} ms/token at {last['tokens']} vs {first['tokens']} tokens, XLA",
                   last["xla_vs_16"], "time per token ratio (1: flat)", f"{last['xla_ms_per_token']:.2f} ms/token",
                   "<= 1.1"))
    out.append(row("decoding", f"{d['preset']} XLA vs no XLA, {first['tokens']} tokens", first["xla_ms_per_token"]
                   / first["ms_per_token"], "time per token ratio", f"{first['xla_ms_per_token']:.2f} vs "
                   f"{first['ms_per_token']:.2f} ms/token"))
    for r in d["xla"]:
        out.append(row("decoding", f"{d['preset']} {r['method']} batch {r['batch']}: XLA vs plain graph",
                       r["xla_vs_graph"], "time per token ratio (below 1: XLA faster)",
                       f"{r['xla_ms_per_token']:.2f} vs {r['ms_per_token']:.2f} ms/token"))
    for r in d["keras_hub"]:
        out.append(row("decoding", f"{d['preset']} greedy batch {r['batch']}: zoo (XLA) vs keras-hub "
                       "BartSeq2SeqLM.generate", r["zoo_vs_keras_hub"], "tokens/s ratio",
                       f"{r['zoo_tokens_per_s']:.0f} vs {r['keras_hub_tokens_per_s']:.0f} tok/s", ">= 1.5"))
    bf16 = next(r for r in d["train"] if r["precision"] == "mixed_bfloat16")
    out.append(row("seq2seq training", f"{d['preset']} mixed_bfloat16 vs float32", bf16["vs_float32"],
                   "step time ratio", f"{bf16['seconds']:.3f} s/step"))
    return out


def qa_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in d["rows"]:
        names = [k for k in r if k.startswith(("keras", "saved_model", "tflite"))]
        keras_name = next(k for k in names if k.startswith("keras"))
        for other in names:
            if other != keras_name:
                out.append(row("question answering", f"{d['model']} context {r['context_tokens']} tokens, batch "
                               f"{r['batch']}: {other.split(' ')[0]} vs Keras side", r[other] / r[keras_name],
                               "answers/s ratio", f"{r[other]:.1f} vs {r[keras_name]:.1f} answers/s"))
    return out


def serve_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for model, s in d["summary"].items():
        out.append(row("serving", f"{model}: zoo serve batched vs unbatched, 32 clients",
                       s["batched_vs_unbatched_at_32"], "requests/s ratio", f"{s['in_process_rows_per_s']:.0f} rows/s "
                       "in-process limit"))
        out.append(row("serving", f"{model}: zoo serve batched vs in-process limit, 32 clients",
                       s["batched_vs_in_process_limit"], "throughput ratio", ""))
    return out


def data_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = f"{d['large_mb']:g} MB / {d['small_mb']:g} MB corpus"
    runs, ratios, out = d["runs"], d["ratios"], []
    for mode, label in (("prepared", "prepared shards"), ("raw", "raw text streamed")):
        large, small = runs[f"large {mode}"], runs[f"small {mode}"]
        out.append(row("data at scale", f"bert_pretrain peak RSS, {sizes}, {label}",
                       ratios[mode]["peak_rss_large_vs_small"], "memory ratio (1: flat in corpus size)",
                       f"{large['peak_mib']:.0f} vs {small['peak_mib']:.0f} MiB", "<= 1.2"))
        out.append(row("data at scale", f"bert_pretrain time to the first step, {sizes}, {label}",
                       ratios[mode]["first_step_large_vs_small"],
                       "time ratio" + (" (the raw stream scans the text once first)" if mode == "raw" else ""),
                       f"{large['first_step_s']:.1f} vs {small['first_step_s']:.1f} s",
                       "<= 1.5" if mode == "prepared" else ""))
    large, small = runs["classify large"], runs["classify small"]
    rows = f"{d['large_rows']:,} rows / {d['small_rows']:,} rows"
    out.append(row("data at scale", f"bert_classify peak RSS, {rows} (streamed / in memory, as by default)",
                   ratios["classify"]["peak_rss_large_vs_small"], "memory ratio (1: flat in rows)",
                   f"{large['peak_mib']:.0f} vs {small['peak_mib']:.0f} MiB", "<= 1.2"))
    out.append(row("data at scale", f"bert_classify time to the first step, {rows}",
                   ratios["classify"]["first_step_large_vs_small"], "time ratio (the stream scans the rows once first)",
                   f"{large['first_step_s']:.1f} vs {small['first_step_s']:.1f} s"))
    q = d["squad"]
    out.append(row("data at scale", f"bert_qa training input, one pass over {q['questions']:,} SQuAD-shaped "
                   "questions: memory growth / the feature arrays it no longer holds", q["rss_growth_vs_features"],
                   "memory ratio (below 1: less than holding the features)", f"{q['questions_per_s']:.0f} "
                   f"questions/s, peak {q['peak_mib']:.0f} MiB"))
    tokens = d["tokens_per_s"]
    out.append(row("data at scale", f"real tokens per step, packed shards vs one line per sequence (length "
                   f"{d['length']})", ratios["packed_vs_raw_tokens_per_step"], "non-padding tokens ratio", "", ">= 2"))
    out.append(row("data at scale", "real tokens per second, packed shards vs raw streamed lines",
                   ratios["packed_vs_raw_tokens_per_s"], "tokens/s ratio",
                   f"{tokens['prepared']:.0f} vs {tokens['raw']:.0f} tokens/s"))
    return out


ROWS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "training": training_rows, "bert": bert_rows, "seq2seq": seq2seq_rows, "qa": qa_rows, "serve": serve_rows,
    "data": data_rows}


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], quick: bool, seconds: dict[str, float]) -> str:
    flags = ", ".join(f for f, on in info["flags"].items() if on) or "none of " + ", ".join(FLAGS)
    versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    lines = ["# kzoo benchmarks", "",
             f"- machine: {info['cpu']}, {info['cores']} cores; flags: {flags}",
             f"- packages: {versions}",
             f"- mode: {'quick (tiny sizes: a smoke test, not figures)' if quick else 'full'}; "
             + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
             "- every ratio is two things measured side by side in one process of this run", "",
             "| benchmark | compared | ratio | meaning | measured | target |", "|---|---|---:|---|---|---|"]
    lines += [f"| {r['benchmark']} | {r['row']} | {r['ratio']:.3g} | {r['meaning']} | {r['measured']} | "
              f"{r['target']} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, max(3, 0.28 * len(rows))))
    ax.barh(range(len(rows)), [max(r["ratio"], 1e-3) for r in rows], color="#3b75af")
    ax.set_yticks(range(len(rows)), [f"{r['benchmark']}: {r['row']}" for r in rows], fontsize=7)
    ax.axvline(1.0, color="#aa3333", linewidth=1)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_here(argv: list[str]) -> int:
    """Run one benchmark script as ``python argv...`` would, in this process; its exit code."""
    saved = sys.argv, list(sys.path)
    sys.argv = list(argv)
    try:
        runpy.run_path(argv[0], run_name="__main__")
        code: Any = 0
    except SystemExit as stop:
        code = stop.code
    except Exception:  # as a fresh process would end: its traceback printed, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.argv, sys.path[:] = saved
        if "keras" in sys.modules:  # each script starts from an empty Keras session, as a fresh process does
            sys.modules["keras"].backend.clear_session()
    if isinstance(code, str):  # what the interpreter would print for SystemExit("message")
        print(code, file=sys.stderr)
    return code if isinstance(code, int) else (0 if code is None else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, every script in this process: checks that every row is produced")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",")] if args.only else list(SCRIPTS)
    unknown = [s for s in chosen if s not in SCRIPTS]
    if unknown:
        print(f"error: unknown benchmark {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    results, rows, seconds = {}, [], {}
    for name in chosen:
        json_name, quick_args, full_args = SCRIPTS[name]
        json_path = os.path.join(args.out, json_name)
        cmd = [sys.executable, os.path.join(HERE, SCRIPT_FILES[name]), *(quick_args if args.quick else full_args)]
        cmd += ["--out", json_path if name in ("qa", "serve") else args.out]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        code = run_here(cmd[1:]) if args.quick else subprocess.run(cmd).returncode
        seconds[name] = time.perf_counter() - start
        if code != 0:
            print(f"error: benchmark {name} failed (exit {code}); its output is above", file=sys.stderr)
            return 1
        with open(json_path) as fh:
            results[name] = json.load(fh)
        rows += ROWS[name](results[name])
    info = machine()
    with open(os.path.join(args.out, "bench.json"), "w") as fh:
        json.dump({"machine": info, "quick": args.quick, "seconds": seconds, "rows": rows, "results": results}, fh,
                  indent=2)
    with open(os.path.join(args.out, "BENCHMARKS.md"), "w") as fh:
        fh.write(markdown(rows, info, args.quick, seconds))
    plot(rows, os.path.join(args.out, "bench.png"), f"{info['cpu']}, {info['cores']} cores: ratios (1 = same)")
    print(f"\nwrote {args.out}/BENCHMARKS.md, bench.json, bench.png ({len(rows)} ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
