"""Run a command while every core is kept busy: ``python tests/cpu_hog.py [--hogs N] -- CMD...``.

`make test-stress` runs the suite this way, as a shared CI machine would run it beside other jobs. The
hogs are plain busy loops at the suite's own priority, one per core by default; they are stopped when the
command ends (or on Ctrl-C), and the CPU time they got is printed, so the run shows that the load was real.
The command finds the hogs' process ids in ``CPU_HOG_PIDS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def _spin() -> None:
    while True:
        pass


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1, help="busy processes (default: one per core)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    start = time.monotonic()
    print(f"cpu_hog: {len(hogs)} busy process(es) on {os.cpu_count()} core(s) while running: {' '.join(command)}",
          flush=True)
    try:
        code = subprocess.call(command, env={**os.environ, "CPU_HOG_PIDS": ",".join(str(h.pid) for h in hogs)})
    except KeyboardInterrupt:
        code = 130
    finally:
        wall = time.monotonic() - start
        used = [_cpu_seconds(h.pid) for h in hogs]
        for h in hogs:
            h.terminate()
            h.join()
    if None not in used:
        print(f"cpu_hog: the hogs used {sum(used):.1f} CPU-seconds in {wall:.0f} s of wall time "
              f"({sum(used) / max(wall, 1e-9):.2f} cores on average)", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
