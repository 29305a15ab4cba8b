"""The command line every recipe shares: ``zoo train RECIPE [options]`` and ``python -m zoo.recipes.RECIPE``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from zoo.config import flatten, load_config_file, parse_set_args
from zoo.errors import ConfigError, ZooError, report_failure
from zoo.recipes.engine.config import PRECISIONS, STRATEGIES
from zoo.recipes.engine.run import Recipe, RunResult, default_run_dir, resolve_config, run


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The options every recipe takes."""
    parser.add_argument("--config", help="a shipped experiment (e.g. digits_small_cnn; see `zoo list`) or a YAML / "
                                         "JSON file of config overrides (e.g. a run's config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field by dotted path, e.g. --set model.dropout=0.1 (repeatable)")
    parser.add_argument("--run-dir", help="where to write the run (default runs/<recipe>-<timestamp>); "
                                          "an unfinished run there is resumed")
    parser.add_argument("--strategy", choices=STRATEGIES, help="shortcut for --set train.strategy=...")
    parser.add_argument("--devices", help="comma-separated devices for mirrored/one_device, e.g. cpu:0,cpu:1")
    parser.add_argument("--cpu-devices", type=int, help="split the CPU into N logical devices (for mirrored on CPU)")
    parser.add_argument("--precision", choices=PRECISIONS, help="shortcut for --set train.precision=...")
    parser.add_argument("--xla", action="store_true", default=None, help="compile train steps with XLA")
    parser.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    parser.add_argument("--batch-size", type=int, help="global batch size (shortcut for train.batch_size)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; only the summary")
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback and its causes")


def load_experiment_config(name_or_path: str, recipe: str) -> dict[str, Any]:
    """Dotted overrides from a ``--config`` file or shipped config name; a file naming another
    recipe (``recipe: translate``) is refused."""
    from zoo.recipes import config_path

    data = load_config_file(config_path(name_or_path))
    meant_for = data.pop("recipe", recipe)
    if meant_for != recipe:
        raise ConfigError(f"config {name_or_path!r} is for recipe {meant_for!r}; run it with "
                          f"`zoo train {meant_for} --config {name_or_path}`")
    return flatten(data)


def overrides_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None,
                        recipe: str = "") -> dict[str, Any]:
    """Dotted overrides from the command line: --config file <- recipe flags <- --set <- shortcuts."""
    overrides: dict[str, Any] = {}
    if args.config:
        overrides.update(load_experiment_config(args.config, recipe))
    overrides.update(extra or {})
    overrides.update(parse_set_args(args.overrides))
    shortcuts = {"train.strategy": args.strategy, "train.precision": args.precision, "train.epochs": args.epochs,
                 "train.batch_size": args.batch_size, "train.cpu_devices": args.cpu_devices,
                 "train.jit_compile": args.xla,
                 "train.devices": args.devices.split(",") if args.devices else None}
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    return overrides


def print_summary(result: RunResult, *, as_json: bool = False, stream: Any = None) -> None:
    """Print the end-of-run table (or JSON) for people (or scripts)."""
    stream = stream or sys.stdout
    metrics = result.metrics
    if as_json:
        json.dump({"run_dir": result.run_dir, **metrics}, stream, indent=2, default=str)
        stream.write("\n")
        return
    last = metrics["epochs"][-1] if metrics.get("epochs") else {}
    done = (("steps", str(metrics["steps_completed"])) if "steps_completed" in metrics
            else ("epochs", str(metrics.get("epochs_completed"))))
    rows = [("run dir", result.run_dir), done,
            ("replicas", str(metrics.get("replicas"))), ("precision", str(metrics.get("precision"))),
            ("parameters", f"{metrics.get('parameters', 0):,}")]
    rows += [(k, f"{v:.4f}") for k, v in last.items() if k not in ("epoch", "step", "seconds") and isinstance(v, float)]
    rows += [(k, f"{v:.4f}") for k, v in metrics.get("final", {}).items()]
    rows.append(("train seconds", f"{metrics.get('train_seconds_this_process', 0):.1f}"))
    width = max(len(k) for k, _ in rows)
    stream.write("\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n")


def configure_logging(quiet: bool) -> None:
    """The zoo's progress lines on stderr (warnings only when ``quiet``); TensorFlow's and absl's INFO off."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(message)s")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main_for(recipe: Recipe, argv: Sequence[str] | None = None) -> int:
    """A recipe's command line (``zoo train NAME``, ``python -m zoo.recipes.NAME``): parse, resolve config,
    train, print the summary. ``recipe.flags`` adds its own shortcut options."""
    parser = argparse.ArgumentParser(prog=f"zoo train {recipe.name}", description=recipe.description)
    add_train_args(parser)
    flags = recipe.flags
    for flag, (_, help_text) in flags.items():
        parser.add_argument(flag, help=help_text)
    args = parser.parse_args(argv)
    configure_logging(args.quiet)
    extra = {key: getattr(args, flag.lstrip("-").replace("-", "_")) for flag, (key, _) in flags.items()}
    cfg = None
    try:
        overrides = overrides_from_args(args, {k: v for k, v in extra.items() if v is not None}, recipe.name)
        cfg, explicit = resolve_config(recipe.config_class, overrides)
        result = run(recipe, cfg, args.run_dir or default_run_dir(recipe.name), explicit=explicit,
                     verbose=0 if (args.quiet or args.json) else "auto")  # --json: stdout holds JSON only
    except (ZooError, OSError, KeyboardInterrupt) as exc:
        last = "completed epoch"
        if cfg is not None and cfg.train.steps:
            last = f"checkpoint (one every {cfg.train.round_steps} steps)"
        return report_failure(exc, args.debug,
                              f"interrupted; run the same command again to resume from the last {last}")
    print_summary(result, as_json=args.json)
    return 0


def prepare_main_for(recipe: Recipe, argv: Sequence[str] | None = None) -> int:
    """``zoo data prepare RECIPE --data ... --out DIR``: the recipe's data tokenized and written once as
    sharded files (see ``zoo.data.prepared``) that ``zoo train RECIPE --data DIR`` reads."""
    import time

    parser = argparse.ArgumentParser(prog=f"zoo data prepare {recipe.name}",
                                     description=f"Tokenize, pack, shuffle and shard {recipe.name}'s data once, "
                                                 f"for `zoo train {recipe.name} --data OUT`.")
    parser.add_argument("--out", required=True, help="the directory to write (new, or empty)")
    parser.add_argument("--config", help="a shipped experiment or a YAML / JSON file of config overrides")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config field by dotted path, e.g. --set data.sequence_length=128 (repeatable)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes tokenizing input files in parallel (default: one per core for inputs over "
                             "64 MB, else 1)")
    parser.add_argument("--shards", type=int, default=0, help="training shards (default: one per 128 MB of input)")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback and its causes")
    for flag, (_, help_text) in recipe.flags.items():
        if flag != "--eval-data":
            parser.add_argument(flag, help=help_text)
    parser.set_defaults(strategy=None, precision=None, epochs=None, batch_size=None, cpu_devices=None, xla=None,
                        devices=None)
    args = parser.parse_args(argv)
    configure_logging(args.quiet or args.json)
    log = logging.getLogger("zoo").info
    extra = {key: getattr(args, flag.lstrip("-").replace("-", "_"), None) for flag, (key, _) in recipe.flags.items()}
    start = time.monotonic()
    try:
        if args.workers < 0 or args.shards < 0:
            raise ConfigError("--workers and --shards take a positive number (0: the default)")
        overrides = overrides_from_args(args, {k: v for k, v in extra.items() if v is not None}, recipe.name)
        cfg, explicit = resolve_config(recipe.config_class, overrides)
        manifest = recipe.prepare_dataset(cfg, explicit, args.out, workers=args.workers, shards=args.shards,
                                          log=log)
    except (ZooError, OSError, KeyboardInterrupt) as exc:
        return report_failure(exc, args.debug, "interrupted; nothing was written: run the same command again")
    if args.json:
        json.dump(manifest, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    examples, padding = manifest["examples"], manifest["padding_fraction"]
    rows = [("prepared", args.out), ("sequences", ", ".join(f"{k} {v:,}" for k, v in examples.items())),
            ("shards", ", ".join(f"{k} {len(v)}" for k, v in manifest["shards"].items())),
            ("sequence length", str(manifest["sequence_length"])),
            ("lines", f"{manifest['lines']:,} in {manifest['documents']:,} documents"),
            ("tokens", f"{manifest['tokens']:,}"),
            ("padding", f"{padding['unpacked']:.1%} one line per sequence -> {padding['packed']:.1%} packed")]
    cleaning = manifest["cleaning"]
    dropped = [f"{cleaning[k]:,} {k.replace('_', ' ')}" for k in ("duplicates_removed", "too_short", "too_long",
                                                                   "skipped_rows") if cleaning.get(k)]
    if dropped:
        rows.append(("dropped lines", ", ".join(dropped)))
    rows.append(("seconds", f"{time.monotonic() - start:.1f}"))
    width = max(len(k) for k, _ in rows)
    sys.stdout.write("\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n")
    sys.stdout.write(f"train on it: zoo train {recipe.name} --data {args.out}\n")
    return 0


__all__ = ["add_train_args", "overrides_from_args", "print_summary", "main_for", "prepare_main_for"]
