"""The ``zoo`` command: list, train, export, compress, translate.

The top of the import order (``zoo`` core <- ``zoo.export`` <- ``zoo.recipes`` <- this module):
the one core module allowed to import the recipes and the exporters.

    zoo list
    zoo train image_classify --epochs 5
    zoo data prepare bert_pretrain --data 'corpus/*.txt' --out data/wiki
    zoo export runs/<run> --to exports --name digits --formats saved_model,tflite_int8
    zoo translate runs/<translate run> "some source sentence" --beam 4
    zoo compress prune runs/<cnn run> --sparsity 0.8 --to exports
    zoo serve exports            # TF Serving's REST :8501 and gRPC :8500, KServe v2
    zoo answer runs/<bert_qa run> "Where was Ada born?" --context "Ada Lovelace was born in London."
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence

from zoo.console import TENSORFLOW_NOISE, filtered_stderr  # noqa: F401 (the zoo command's filter)
from zoo.errors import ZooError, format_error, report_failure


def cmd_list(args: argparse.Namespace) -> int:
    from zoo import registry
    from zoo.recipes import list_configs, list_recipes

    rows = []
    for name in registry.list_models():
        entry = registry.get_entry(name)
        params = trainable = None
        if not args.no_params and hasattr(entry.default_config, "parameter_count"):
            # Counted from the shapes: building every model just to count it took ~10 s (bert_large alone).
            cfg = entry.default_config
            params = cfg.parameter_count()
            trainable = cfg.trainable_parameter_count() if hasattr(cfg, "trainable_parameter_count") else params
        elif not args.no_params:
            model = registry.build(name)
            params = model.count_params()
            trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
        rows.append({"name": name, "task": entry.task, "trainable_parameters": trainable, "parameters": params,
                     "description": entry.description})
    from zoo.tasks import all_tasks

    tasks = {t.name: {"description": t.description, "recipes": sorted(t.recipes)} for t in all_tasks()}
    if args.json:
        print(json.dumps({"models": rows, "tasks": tasks, "recipes": list_recipes(), "configs": list_configs()},
                         indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'task':<20}  {'trainable':>12}  {'all weights':>12}  description")
    for r in rows:
        trainable = f"{r['trainable_parameters']:,}" if r["trainable_parameters"] is not None else "-"
        params = f"{r['parameters']:,}" if r["parameters"] is not None else "-"
        print(f"{r['name']:<{width}}  {r['task']:<20}  {trainable:>12}  {params:>12}  {r['description']}")
    print("\n(trainable = the published parameter count; all weights adds BatchNorm's moving statistics)")
    print("\ntasks (zoo train RECIPE):")
    for name, t in tasks.items():
        print(f"  {name:<21} {', '.join(t['recipes']):<15} {t['description']}")
    print("recipes: " + ", ".join(list_recipes()))
    print("experiment configs (zoo train RECIPE --config NAME): " + ", ".join(list_configs()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.export.exporter import export_run
    from zoo.export.verify import format_table

    decode = {"method": "beam", "beam_width": args.beam} if args.beam and args.beam > 1 else None
    version_dir, report = export_run(args.run_dir, args.to, args.name or _default_name(args.run_dir),
                                     args.formats, args.version, args.report, decode=decode)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from zoo.tasks import get_task

        print(f"published {version_dir}")
        summary = get_task(report["task"]).export_summary
        if summary is not None:
            print(summary(report) + "\n")
        print(format_table(report))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from zoo.export.compress import compress
    from zoo.export.verify import format_table

    summary = compress(args.kind, args.run_dir, epochs=args.epochs, sparsity=args.sparsity,
                       learning_rate=args.learning_rate, to=args.to, name=args.name, version=args.version)
    report = summary.pop("report", None)
    if args.json:
        print(json.dumps({**summary, "report": report}, indent=2, default=str))
        return 0
    if args.kind == "prune":
        print(f"pruned run dir {summary['pruned_run_dir']}: target sparsity {summary['target_sparsity']:.2f}, "
              f"gzip size {summary['gzip_ratio']:.2f}x of the unpruned float32 TFLite file")
    else:
        print(f"QAT int8 TFLite: accuracy {summary['tflite_accuracy']:.4f} "
              f"(the float model before QAT: {summary['keras_accuracy']:.4f}, delta {summary['accuracy_delta']:+.4f}), "
              f"{summary['size_bytes']:,} bytes")
    if report is not None:
        print(f"published {summary['version_dir']}\n")
        print(format_table(report))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from zoo import tasks

    options = {"method": args.method or ("beam" if args.beam > 1 else "greedy"), "beam_width": args.beam}
    for key in ("top_k", "top_p", "temperature", "seed", "max_length", "length_penalty"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    translator = tasks.get_task("translation").predictor_class().from_run(args.run_dir, jit_compile=args.xla, **options)
    texts = args.texts or [line.rstrip("\r\n") for line in sys.stdin]
    if not any(t.strip() for t in texts):
        raise ZooError("nothing to translate: give texts as arguments or on standard input")
    # One output line per input line, so outputs stay aligned with a file's lines: an empty line stays empty.
    filled = [i for i, t in enumerate(texts) if t.strip()]
    outputs = [""] * len(texts)
    for i, out in zip(filled, translator([texts[i] for i in filled])):
        outputs[i] = out
    for out in outputs:
        print(out)
    return 0


def _default_name(run_dir: str) -> str:
    """The model's name from the run's run.json (the export then names what is wrong, if anything)."""
    from zoo.rundir import RunDir

    try:
        return RunDir.open(run_dir, finished=False).info.model
    except ZooError:
        return "model"


def _qa_pairs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(questions, contexts) from the command line, or from standard input: JSON Lines of
    {"question", "context"}, or one question per line when --context / --context-file gives the passage."""
    from zoo.errors import DataError

    if args.context is not None and args.context_file is not None:
        raise DataError("give the passage once: --context TEXT or --context-file FILE")
    context = args.context
    if args.context_file is not None:
        with open(args.context_file, encoding="utf-8") as fh:
            context = fh.read()
    if args.question is not None:
        if context is None:
            raise DataError("give the passage to answer from: --context TEXT or --context-file FILE")
        return [args.question], [context]
    questions, contexts = [], []
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        if context is not None:
            questions.append(line.rstrip("\n"))
            contexts.append(context)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("question"), str) \
                or not isinstance(record.get("context"), str):
            raise DataError(f"stdin line {n}: expected a JSON object with string 'question' and 'context' (or pass "
                            "--context and one question per line)")
        questions.append(record["question"])
        contexts.append(record["context"])
    if not questions:
        raise DataError("no questions: pass one as an argument, or JSON Lines of {question, context} on stdin")
    return questions, contexts


def cmd_answer(args: argparse.Namespace) -> int:
    questions, contexts = _qa_pairs(args)
    from zoo import tasks

    qa = tasks.get_task("question_answering").predictor_class().from_run(args.run_dir)
    for a in qa(questions, contexts):
        if args.json:
            print(json.dumps({"answer": a.text, "score": round(a.score, 4), "start": a.start, "end": a.end},
                             ensure_ascii=False))
        else:
            print(a.text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from zoo.export.serve.server import ServeOptions, serve

    fields = {f.name for f in dataclasses.fields(ServeOptions)}
    return serve(ServeOptions(**{k: v for k, v in vars(args).items() if k in fields}))


def cmd_launch(args: argparse.Namespace) -> int:
    from zoo.recipes.engine.launch import launch

    command = args.worker_command[1:] if args.worker_command[:1] == ["--"] else args.worker_command
    return launch(args.workers, command, host=args.host, port_base=args.port_base,
                  data_service_workers=args.data_service_workers)


DATA_USAGE = ("usage: zoo data prepare RECIPE --data ... --out DIR [--set KEY=VALUE ...]\n"
              "tokenize, pack, shuffle and shard a recipe's data once; then zoo train RECIPE --data DIR\n"
              "(zoo data prepare RECIPE --help shows the options)")


def _data_command(argv: list[str]) -> int:
    """``zoo data prepare RECIPE ...``: everything after the recipe name belongs to the recipe's parser."""
    if argv[:1] != ["prepare"] or len(argv) < 2 or argv[1].startswith("-"):
        helped = any(a in ("-h", "--help") for a in argv)
        print(DATA_USAGE, file=sys.stdout if helped else sys.stderr)
        return 0 if helped else 2
    try:
        from zoo.errors import ConfigError
        from zoo.recipes import check_recipe, get_recipe, list_recipes

        check_recipe(argv[1])
        recipe = get_recipe(argv[1])
        if recipe.prepare_dataset is None:
            able = [name for name in list_recipes() if get_recipe(name).prepare_dataset is not None]
            raise ConfigError(f"zoo data prepare supports {', '.join(able)}; {argv[1]} reads its data files "
                              f"directly: zoo train {argv[1]} --data ...")
    except ZooError as exc:
        print(format_error(exc, "--debug" in argv), file=sys.stderr)
        return 2
    from zoo.recipes.engine.cli import prepare_main_for

    return prepare_main_for(recipe, argv[2:])


def main(argv: Sequence[str] | None = None) -> int:
    """The ``zoo`` command. TensorFlow's console noise is filtered out unless ``--verbose`` (anywhere)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:
        return _main([a for a in argv if a != "--verbose"])
    # Level 3 also hides the cuInit error TensorFlow logs when it first initializes devices.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with filtered_stderr():
        return _main(argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo", description="Keras/TensorFlow model zoo with verified exports",
                                     epilog="--verbose (anywhere) shows TensorFlow's start-up messages; "
                                            "--debug shows the full cause of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="zoo data prepare RECIPE --data ... --out DIR: tokenized, packed, sharded files "
                                "for zoo train RECIPE --data DIR", add_help=False)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, print the full traceback and its causes")

    p_list = sub.add_parser("list", parents=[common], help="the models (with parameter counts) and recipes there are")
    p_list.add_argument("--json", action="store_true")
    p_list.add_argument("--no-params", action="store_true", help="skip building models to count parameters")

    p_train = sub.add_parser("train", help="run a recipe: zoo train RECIPE [recipe options] (see RECIPE --help)",
                             add_help=False)
    p_train.add_argument("recipe", nargs="?")

    p_export = sub.add_parser("export", parents=[common], help="export a finished run as SavedModel / TFLite, verified")
    p_export.add_argument("run_dir")
    p_export.add_argument("--to", required=True, help="the base path (TF Serving's model_base_path parent)")
    p_export.add_argument("--name", help="model name under the base path (default: the model's name)")
    p_export.add_argument("--formats", default="saved_model,tflite,tflite_dynamic,tflite_int8",
                          help="comma-separated: saved_model, tflite, tflite_float16, tflite_dynamic, "
                               "tflite_int8_weights, tflite_int8, tflite_int16x8")
    p_export.add_argument("--version", type=int, help="version number (default: next free); never overwrites")
    p_export.add_argument("--report", help="also write report.json here")
    p_export.add_argument("--json", action="store_true", help="print the report as JSON")
    p_export.add_argument("--beam", type=int, help="translation runs: beam width baked into the SavedModel "
                                                   "(default: greedy)")

    p_c = sub.add_parser("compress", parents=[common],
                         help="QAT or magnitude pruning of a CNN run (tensorflow-model-optimization)")
    p_c.add_argument("kind", choices=("qat", "prune"))
    p_c.add_argument("run_dir")
    p_c.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    p_c.add_argument("--sparsity", type=float, default=0.8, help="prune: final fraction of zero weights")
    p_c.add_argument("--learning-rate", dest="learning_rate", type=float, default=1e-4)
    p_c.add_argument("--to", help="publish the result under this base path")
    p_c.add_argument("--name", help="model name under the base path")
    p_c.add_argument("--version", type=int)
    p_c.add_argument("--json", action="store_true")

    p_tr = sub.add_parser("translate", parents=[common], help="translate texts with a finished translate run")
    p_tr.add_argument("run_dir")
    p_tr.add_argument("texts", nargs="*", help="source texts (default: one per line on standard input)")
    p_tr.add_argument("--beam", type=int, default=1, help="beam width (1 = greedy)")
    p_tr.add_argument("--method", choices=("greedy", "beam", "top_k", "top_p"), help="decoding method")
    p_tr.add_argument("--top-k", dest="top_k", type=int)
    p_tr.add_argument("--top-p", dest="top_p", type=float)
    p_tr.add_argument("--temperature", type=float)
    p_tr.add_argument("--seed", type=int)
    p_tr.add_argument("--length-penalty", dest="length_penalty", type=float)
    p_tr.add_argument("--max-length", dest="max_length", type=int, help="most tokens to generate")
    p_tr.add_argument("--no-xla", dest="xla", action="store_const", const=False, default=None,
                      help="decode without XLA (default: XLA for greedy and beam): exactly the graph an exported "
                           "SavedModel (and TF Serving) runs")

    p_a = sub.add_parser("answer", parents=[common], help="answer questions from a passage with a finished bert_qa run")
    p_a.add_argument("run_dir")
    p_a.add_argument("question", nargs="?", help="the question (default: JSON Lines of {question, context} on stdin)")
    p_a.add_argument("--context", help="the passage to answer from")
    p_a.add_argument("--context-file", dest="context_file", help="read the passage from this file")
    p_a.add_argument("--json", action="store_true", help="one JSON line per answer: answer, score, start, end "
                                                         "(character offsets in the passage; -1 for no answer)")

    p_s = sub.add_parser("serve", parents=[common],
                         help="serve exports over TF Serving's REST and gRPC APIs and KServe v2",
                         description="Serve every NAME/<version> SavedModel under BASE (or the models of a TF "
                                     "Serving models.config). TF Serving's flag spellings (--rest_api_port ...) "
                                     "work too.")
    p_s.add_argument("base", nargs="?", help="the export base path (zoo export --to)")

    def flag(name: str, **kw: object) -> None:
        p_s.add_argument(f"--{name.replace('_', '-')}", f"--{name}", dest=name, **kw)  # type: ignore[arg-type]

    flag("model_config_file", help="TF Serving's models.config (text ModelServerConfig) instead of BASE")
    flag("port", type=int, default=8500, help="gRPC port (default 8500; 0 picks a free one)")
    flag("rest_api_port", type=int, default=8501, help="REST port (default 8501; 0 picks a free one)")
    p_s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                         "only; 0.0.0.0 for every interface)")
    flag("enable_batching", action="store_true", help="merge concurrent requests into batches (zoo's defaults)")
    flag("batching_parameters_file", help="TF Serving's batching parameters text file (turns batching on)")
    flag("file_system_poll_wait_seconds", type=float, default=1.0,
         help="how often to look for new versions (default 1; 0: only at start)")
    flag("max_num_load_retries", type=int, default=5,
         help="times a version that failed to load is tried again (default 5; also whenever its folder changes)")
    flag("load_retry_interval_micros", type=int, default=60_000_000,
         help="wait before the first retry, doubling after each (default 60 s)")
    flag("max_body_bytes", type=int, default=32 << 20, help="largest REST request body (default 32 MiB; 413 beyond)")
    flag("max_instances", type=int, default=1024, help="most instances (rows) per request (default 1024)")
    flag("max_string_bytes", type=int, default=1 << 20, help="longest string input (default 1 MiB)")
    flag("request_timeout", type=float, default=30.0, help="seconds before a request gets 504 / "
                                                           "DEADLINE_EXCEEDED (default 30; 0: none)")
    flag("grpc_max_message_bytes", type=int, default=2**31 - 1, help="gRPC message size limit (default 2 GiB, as "
                                                                      "TF Serving)")
    p_s.add_argument("--cors", action="store_true", help="answer browsers from any origin (Access-Control-Allow-"
                                                         "Origin: *)")

    p_l = sub.add_parser("launch", parents=[common],
                         help="run a command as a multi-worker job of local processes (TF_CONFIG for each): "
                              "zoo launch --workers N -- zoo train ...")
    p_l.add_argument("--workers", type=int, required=True, help="worker processes (worker 0 is the chief)")
    p_l.add_argument("--port-base", dest="port_base", type=int, help="ports P..P+N-1 (default: free ones)")
    p_l.add_argument("--host", default="127.0.0.1", help="address the workers reach each other at")
    p_l.add_argument("--data-service-workers", dest="data_service_workers", type=int, default=0, metavar="K",
                     help="also start a tf.data service (a dispatcher and K workers) that runs the job's input "
                          "pipeline (a prepared dataset); port P+N with --port-base")
    p_l.add_argument("worker_command", metavar="COMMAND", nargs=argparse.REMAINDER,
                     help="after --: the command each worker runs")

    if argv[:1] == ["train"]:
        # Everything after the recipe name belongs to the recipe's own parser.
        if len(argv) < 2 or argv[1].startswith("-"):
            from zoo.recipes import list_recipes

            print("usage: zoo train RECIPE [options]\nrecipes: " + ", ".join(list_recipes())
                  + "\n(zoo train RECIPE --help shows a recipe's options)")
            return 0 if any(a in ("-h", "--help") for a in argv[1:]) else 2
        try:
            from zoo.recipes import check_recipe, get_recipe

            check_recipe(argv[1])  # before TensorFlow is imported: a typo is answered at once
            recipe = get_recipe(argv[1])
        except ZooError as exc:
            print(format_error(exc, "--debug" in argv), file=sys.stderr)
            return 2
        from zoo.recipes.engine.cli import main_for

        return main_for(recipe, argv[2:])

    if argv[:1] == ["data"]:
        return _data_command(argv[1:])

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not getattr(args, "json", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s" if args.command == "serve"
                        else "%(levelname)s %(message)s")
    # "Assets written to <staging dir>" misleads; absl's INFO lines (renamed SavedModel inputs) say nothing useful.
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        commands = {"list": cmd_list, "export": cmd_export, "translate": cmd_translate, "compress": cmd_compress,
                    "serve": cmd_serve, "answer": cmd_answer, "launch": cmd_launch}
        return commands[args.command](args)
    except (ZooError, OSError, KeyboardInterrupt) as exc:
        return report_failure(exc, args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
