"""Parity report: the same evaluation examples through Keras, the SavedModel and every TFLite file."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

# A float export whose outputs differ from Keras by more than this (relative to the logit
# scale) is a broken export and is not published.
FLOAT_TOLERANCE = {"saved_model": 1e-4, "tflite": 1e-3}


def latency_ms(fn: Callable[[np.ndarray], Any], x1: np.ndarray, runs: int = 50, warmup: int = 5) -> dict[str, float]:
    """p50 / p95 wall time of ``fn`` on one example, in milliseconds."""
    for _ in range(warmup):
        fn(x1)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x1)
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def compare(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, output differences and label agreement of ``outputs`` against ``reference``."""
    ref_pred = reference.argmax(-1)
    pred = outputs.argmax(-1)
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    return {
        "accuracy": float((pred == labels).mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "label_agreement": float((pred == ref_pred).mean()),
    }


def batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i:i + batch])) for i in range(0, len(x), batch)])


def format_table(report: dict[str, Any]) -> str:
    """The per-format report as an aligned text table."""
    return _align(table_rows(report))


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """The per-format report as rows of cells, header first (for the text and markdown tables)."""
    if report.get("task") == "translation":
        header = ["format", "BLEU", "exact match", "same as keras", "size", "p50 ms"]
        rows = [header, ["keras", f"{report['keras']['bleu']:.2f}", f"{report['keras']['exact_match']:.4f}", "-",
                         "-", f"{report['keras']['latency_ms']['p50']:.3f}"]]
        for fmt, r in report["formats"].items():
            rows.append([fmt, f"{r['bleu']:.2f}", f"{r['exact_match']:.4f}", f"{r['agreement']:.4f}",
                         _human(r["size_bytes"]), f"{r['latency_ms']['p50']:.3f}"])
        return rows
    if report.get("task") == "question_answering":
        rows = [["format", "exact match", "F1", "same as keras", "size", "p50 ms"],
                ["keras", f"{report['keras']['exact_match']:.2f}", f"{report['keras']['f1']:.2f}", "-", "-",
                 f"{report['keras']['latency_ms']['p50']:.3f}"]]
        for fmt, r in report["formats"].items():
            rows.append([fmt, f"{r['exact_match']:.2f}", f"{r['f1']:.2f}", f"{r['agreement']:.4f}",
                         _human(r["size_bytes"]), f"{r['latency_ms']['p50']:.3f}"])
        return rows
    header = ["format", "accuracy", "delta", "max |diff|", "agree", "size", "x f32", "p50 ms"]
    rows = [header]
    for fmt, r in report["formats"].items():
        rows.append([
            fmt, f"{r['accuracy']:.4f}", f"{r['accuracy_delta']:+.4f}", f"{r['max_abs_diff']:.2e}",
            f"{r['label_agreement']:.4f}", _human(r["size_bytes"]),
            f"{r['size_ratio']:.2f}" if r.get("size_ratio") is not None else "-", f"{r['latency_ms']['p50']:.3f}",
        ])
    return rows


def markdown_report(report: dict[str, Any]) -> str:
    """report.md: what was exported, on which examples and machine, and the per-format table."""
    head, *body = [[c.replace("|", "\\|") for c in row] for row in table_rows(report)]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in body]
    machine = report.get("machine", {})
    intro = [f"# Export report: {report.get('model')} version {report.get('version')}", "",
             f"- run: `{report.get('run_dir')}`",
             f"- verified on {report.get('examples')} held-out examples ({report.get('input')})",
             f"- machine: {machine.get('platform')}, {machine.get('cpus')} CPUs; latency is p50 at batch 1"]
    if report.get("task") not in ("translation", "question_answering"):
        intro.append(f"- Keras accuracy {report['keras']['accuracy']:.4f}; `agree` = same predicted label as Keras, "
                     "`x f32` = size relative to the float32 TFLite file")
    return "\n".join(intro + [""] + md) + "\n"


def plot_report(report: dict[str, Any], path: str) -> None:
    """report.png: accuracy (or BLEU), size and p50 latency per format, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    formats = list(report["formats"])
    quality_key, quality_name = {"translation": ("bleu", "BLEU"), "question_answering": ("exact_match", "exact match")
                                 }.get(report.get("task", ""), ("accuracy", "accuracy"))
    names = ["keras"] + formats
    quality = [report["keras"].get(quality_key, float("nan"))] + [report["formats"][f][quality_key] for f in formats]
    latency = [report["keras"]["latency_ms"]["p50"]] + [report["formats"][f]["latency_ms"]["p50"] for f in formats]
    sizes = [report["formats"][f]["size_bytes"] / 2**20 for f in formats]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, labels, values, title in ((axes[0], names, quality, quality_name), (axes[1], formats, sizes, "size (MB)"),
                                      (axes[2], names, latency, "p50 latency, batch 1 (ms)")):
        bars = ax.bar(range(len(values)), values, color=["#777777" if n == "keras" else "#3b75af" for n in labels])
        ax.set_xticks(range(len(values)), labels, rotation=30, ha="right")
        ax.set_title(title)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[2].set_yscale("log")
    fig.suptitle(f"{report.get('model')} v{report.get('version')}: {report.get('examples')} held-out examples")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _align(rows: list[list[str]]) -> str:
    header = rows[0]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
