"""How soon a cancelled job stops in `log3d serve`: the budget is the next check (a stage boundary, or
the clean-up's next step) + 1 s. tests/test_server_stress.py asserts only *where* it stops (a busy
machine must not fail a test on a time); this script holds the times against the budget.

    .venv/bin/python bench/bench_cancel.py [--repeats 3]

Starts its own server (tests/test_server_stress.py's ``serve_process``) and runs
``measure_cancels`` (its docstring says how each budget is derived). Prints a Markdown table;
writes bench/results/cancel.json and cancel.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_server_stress import measure_cancels, serve_process  # noqa: E402

RESULTS = REPO / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="log3d_cancel_bench_") as tmp, serve_process(Path(tmp)) as srv:
        for k in range(args.repeats):
            with srv.client() as c:
                for r in measure_cancels(c):
                    rows.append({"repeat": k + 1, **r, "within_budget": r["measured_s"] <= r["budget_s"],
                                 "load_1min": round(os.getloadavg()[0], 2)})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    lines = ["# Cancel latency of `log3d serve` (bench/bench_cancel.py)\n",
             f"{os.cpu_count()} cores, commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}; seconds, client-side.\n",
             "| repeat | stage | ended | in stage | cancel at | measured | budget | within | load |",
             "|---:|---|---|---|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['repeat']} | {r['stage']} | {r['end']} | {r['end_stage']} | {r['cancel_at_s']:.2f} | "
                     f"{r['measured_s']:.3f} | {r['budget_s']:.2f} | {'yes' if r['within_budget'] else '**no**'} | "
                     f"{r['load_1min']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "cancel.json").write_text(json.dumps({"commit": commit, "rows": rows}, indent=1))
    (RESULTS / "cancel.md").write_text(text)
    return 0 if all(r["within_budget"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
