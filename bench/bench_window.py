"""How long the UI pauses when the add-on runs in a real Blender window (the numbers the window tests
print but must not assert: a busy machine would fail them at random).

    LOG3D_WINDOW_TESTS=required .venv/bin/python bench/bench_window.py [--resolution 1024] [--repeats 1]

Needs Debian's ``blender`` and ``xvfb-run`` (``python3 install.py --test`` installs them as root).
Each scenario is a fresh Blender window driven by tests/window_driver.py, with a local
``log3d serve`` limited to one core beside it (the other core is Blender's):

1. **large**: Subdivided Suzanne (level 2) remeshed at N (direct mode) with *Remesh Selected*; the
   longest gap between the ticks of a 50 ms app timer in each phase: *running* (the job),
   *applying* (the result entering the scene, a build step per tick), *finishing* (the tick the
   operator ends in: its last step, the undo step, Blender's first evaluation of the new object) and
   *after* (the next redraws).
2. **bare_link**: Blender alone taking in an object of as many faces, linked in one tick with no
   add-on code running, then one undo push: the pauses no add-on can slice (the baseline for
   *finishing* and *after*).
3. **cancel**: Esc two seconds into an N³ job: seconds from the key press to the operator's end.

The targets (held here, never in a test): running and applying ≤ 0.5 s; finishing and after ≤
Blender's own (the larger of its link and undo pauses) + 0.5 s; Esc to the end ≤ 1 s. Prints a
Markdown table; writes bench/results/window_ui_gaps.json and window_ui_gaps_table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.window_harness import available, blender_version, make_runtime, run_window, step, window_backend  # noqa: E402

RESULTS = REPO / "bench" / "results"


def machine_load() -> float:
    return os.getloadavg()[0]


def one_repeat(runtime: dict[str, str], workdir: Path, resolution: int) -> dict:
    with window_backend(runtime) as (port, _):
        large = step(run_window(runtime, "large", workdir, port=port, resolution=resolution, subdivide=2), "large:done")
        faces = large["scene"]["Suzanne_log3d"]["faces"]
        bare = step(run_window(runtime, "bare_link", workdir, port=port, faces=faces), "bare:done")
        cancel_run = run_window(runtime, "cancel", workdir, port=port, resolution=resolution, subdivide=2)
    gaps = large["phase_gaps"]
    own = max(bare["after_link"], bare["after_undo"])
    latency = step(cancel_run, "cancel_latency")["seconds"]
    return {
        "faces": faces, "job_s": large["seconds"], "ticks": large["phase_ticks"], "gaps": gaps,
        "blender_alone": {"idle": bare["idle"], "after_link": bare["after_link"], "after_undo": bare["after_undo"]},
        "esc_to_end_s": latency,
        "within_targets": {
            "running_applying_le_0.5": gaps.get("running", 0.0) <= 0.5 and gaps.get("applying", 0.0) <= 0.5,
            "finishing_after_le_own_plus_0.5": max(gaps.get("finishing", 0.0), gaps.get("after", 0.0)) <= own + 0.5,
            "esc_le_1s": latency is not None and latency <= 1.0,
        },
        "load_1min": round(machine_load(), 2),
    }


def table(rows: list[dict]) -> str:
    lines = ["| repeat | faces | job s | running | applying | finishing | after | Blender alone: link / undo | Esc → end s | load |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for i, r in enumerate(rows, 1):
        g, b = r["gaps"], r["blender_alone"]
        lines.append(f"| {i} | {r['faces']:,} | {r['job_s']} | {g.get('running', 0.0)} | {g.get('applying', 0.0)} | "
                     f"{g.get('finishing', 0.0)} | {g.get('after', 0.0)} | {b['after_link']} / {b['after_undo']} | "
                     f"{r['esc_to_end_s']} | {r['load_1min']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "window_ui_gaps")
    args = parser.parse_args()
    if not available():
        print("bench_window: needs `blender` and `xvfb-run` on PATH (python3 install.py --test installs Debian's)")
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="log3d_window_bench_") as tmp:
        runtime = make_runtime(Path(tmp))
        for k in range(args.repeats):
            workdir = Path(tmp) / f"r{k}"
            workdir.mkdir()
            rows.append(one_repeat(runtime, workdir, args.resolution))
            print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    header = (f"# UI gaps of a {args.resolution}³ remesh in a real Blender window (bench/bench_window.py)\n\n"
              f"{blender_version()} under xvfb-run, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}. Longest gap between UI ticks per phase, in "
              f"seconds; 'load' is the 1-minute load average after the repeat.\n")
    text = header + "\n" + table(rows) + "\n"
    print(text)
    args.out.with_suffix(".json").write_text(json.dumps({"resolution": args.resolution, "commit": commit,
                                                          "blender": blender_version(), "rows": rows}, indent=1))
    args.out.with_name(args.out.name + "_table.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
