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


def main_for(recipe: Recipe, argv: Sequence[str] | None = None) -> int:
    """A recipe's command line (``zoo train NAME``, ``python -m zoo.recipes.NAME``): parse, resolve config,
    train, print the summary. ``recipe.flags`` adds its own shortcut options."""
    parser = argparse.ArgumentParser(prog=f"zoo train {recipe.name}", description=recipe.description)
    add_train_args(parser)
    flags = recipe.flags
    for flag, (_, help_text) in flags.items():
        parser.add_argument(flag, help=help_text)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
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


__all__ = ["add_train_args", "overrides_from_args", "print_summary", "main_for"]
