"""`make bench` in its quick mode: every benchmark script runs in a fresh process at tiny sizes and every
row of the report is produced, with the machine's CPU flags and package versions. The numbers are not
checked here (timed assertions do not belong in tests); `make bench` measures them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


def test_quick_bench_produces_every_row(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "all.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bench = json.loads((out / "bench.json").read_text())
    kinds = {}
    for r in bench["rows"]:
        kinds.setdefault(r["benchmark"], []).append(r["row"])
        assert r["ratio"] > 0 and r["ratio"] == r["ratio"], r  # positive, not NaN
    assert set(kinds) == {"training", "input pipeline", "export", "bert training", "decoding", "seq2seq training",
                          "question answering", "serving", "data at scale"}
    bert = kinds["bert training"]
    assert any("zoo vs keras-hub" in r and "XLA" in r for r in bert) and any("zoo vs keras-hub" in r and "XLA" not in r
                                                                            for r in bert)
    assert any("FLOP/s vs float32 matmul" in r for r in bert) and any("mixed_bfloat16 vs float32" in r for r in bert)
    assert any("mixed_bfloat16 + XLA vs without XLA" in r for r in bert)
    assert any("own matmuls alone: FLOP/s" in r for r in bert) and any("own matmuls alone vs the step" in r
                                                                          for r in bert)
    decoding = kinds["decoding"]
    assert any("cached vs uncached" in r for r in decoding) and any("XLA vs no XLA" in r for r in decoding)
    assert {m for m in ("greedy", "beam", "top_k") if any(f"{m} batch 32: XLA vs plain graph" in r
                                                          for r in decoding)} == {"greedy", "beam", "top_k"}
    assert sum("vs keras-hub BartSeq2SeqLM.generate" in r for r in decoding) == 2
    assert len(kinds["input pipeline"]) == 2 and any("tflite_int8" in r for r in kinds["export"])
    assert {"saved_model", "tflite"} <= {r.split(": ")[1].split(" ")[0] for r in kinds["question answering"]}
    data = kinds["data at scale"]
    assert sum("bert_pretrain peak RSS" in r for r in data) == 2 and sum("first step" in r for r in data) == 3
    assert sum("bert_classify peak RSS" in r for r in data) == 1
    assert any("real tokens per step" in r for r in data) and any("real tokens per second" in r for r in data)
    assert any("SQuAD-shaped questions" in r for r in data)
    machine = bench["machine"]
    # The flags are read off this machine: every one the report names is on exactly where /proc/cpuinfo has it.
    cpu_flags = next(ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags"))
    assert machine["cpu"] and {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} <= set(machine["flags"])
    assert machine["flags"] == {f: f in cpu_flags for f in machine["flags"]}, machine["flags"]
    assert machine["packages"]["tensorflow"] and machine["packages"]["keras"]
    md = (out / "BENCHMARKS.md").read_text()
    assert "| benchmark | compared | ratio |" in md and md.count("\n| ") == len(bench["rows"]) + 1
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
