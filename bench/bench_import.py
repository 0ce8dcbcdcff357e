"""Wall time of ``import biomodal`` and ``biomodal --help`` (best and median of N fresh processes).

Prints one JSON line per measurement. Usage: ``python bench/bench_import.py [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 3 if args.quick else args.repeats
    exe = shutil.which("biomodal") or str(__import__("pathlib").Path(sys.executable).with_name("biomodal"))
    cases = {
        "python_baseline": [sys.executable, "-c", "pass"],
        "import_biomodal": [sys.executable, "-c", "import biomodal"],
        "biomodal_help": [exe, "--help"],
    }
    for name, cmd in cases.items():
        t = _time(cmd, n)
        print(
            json.dumps(
                {
                    "bench": name,
                    "best_s": round(min(t), 3),
                    "median_s": round(statistics.median(t), 3),
                    "repeats": n,
                    "goal_s": {"import_biomodal": 1.5, "biomodal_help": 1.0}.get(name),
                }
            )
        )


if __name__ == "__main__":
    main()
