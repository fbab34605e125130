"""A flood of idle, keyless connections against `log3d serve` from another local user, and a keyed
client's `hello` during it (issue 29: 1,106 such TCP connections once filled the server's 1,024
descriptors and held keyed clients off for about 17 s).

    .venv/bin/python bench/bench_flood.py [--transports ipc tcp] [--processes 4 8] [--seconds 20]
                                          [--hard-limit 1024] [--handshake-timeouts 1 0.25]

``tcp``: the server listens on a loopback port and the flooders connect to it. ``ipc`` (the default
on POSIX, backend/listen.py): the server listens on a Unix socket in its 0700 runtime folder, and
the flooders run as another user (uid 65534, "nobody"; running them so needs root) and try to
connect to that socket, the way another user on the machine would; the folder above the runtime
folder is left open to them, so only the runtime folder's own permissions keep them out.

Starts a server whose open-file limit is ``--hard-limit`` (soft and hard: the server cannot raise
it, so the flood meets the descriptor limit the report met), then ``--processes`` flooders that
each open connections as fast as the server takes them, send nothing and hold them for the whole
flood (a refused or timed-out connect is retried). Every second a fresh keyed client sends `hello`
and times the answer. Reported: connections the flooders opened, the server's open descriptors
(largest seen), the hello latencies (median, largest), the server's CPU seconds over the flood, the connect attempts,
and the connection counts the server itself reports in `hello`. Prints a table; writes
bench/results/flood.json and flood.md. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"

from backend.server import ServerConfig  # noqa: E402


FLOOD_UID = 65534  # "nobody": the other local user of the ipc flood


def flooder(target: str, seconds: float, opened: "mp.Value", attempts: "mp.Value", uid: int | None) -> None:
    """Open connections to ``target`` (``tcp://127.0.0.1:PORT`` or ``ipc://PATH``) as fast as they are
    taken, send nothing, hold them to the end; as user ``uid`` when given."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with attempts.get_lock():
            attempts.value += 1
        try:
            if target.startswith("ipc://"):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(target[len("ipc://"):])
                except OSError:
                    s.close()
                    raise
            else:
                s = socket.create_connection(("127.0.0.1", int(target.rsplit(":", 1)[1])), timeout=1.0)
            held.append(s)
            with opened.get_lock():
                opened.value += 1
        except OSError:
            time.sleep(0.001)
    for s in held:
        s.close()


def start_server(tmp: Path, hard_limit: int, handshake_timeout_s: float, transport: str) -> tuple[subprocess.Popen, int, str]:
    env = {**os.environ, "LOG3D_RUNTIME_DIR": str(tmp / "runtime"), "PYTHONPATH": str(REPO)}
    log = open(tmp / "serve.log", "wb")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard_limit, hard_limit))

    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--port", "0", "--device", "cpu",
                             "--handshake-timeout", str(handshake_timeout_s), "--transport", transport], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(rb"listening on (\S+) as server (\d+)", (tmp / "serve.log").read_bytes())
        if m:
            return proc, int(m.group(2)), m.group(1).decode()
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def flood_once(transport: str, processes: int, seconds: float, hard_limit: int, handshake_timeout_s: float) -> dict:
    """One flood of ``processes`` flooders against a fresh server; its row of the table."""
    import psutil

    from backend.client import Log3DClient

    tmp = Path(tempfile.mkdtemp(prefix="log3d_flood_", dir="/tmp"))
    tmp.chmod(0o755)  # open to the other user: only the runtime folder's own 0700 may keep them out
    os.environ["LOG3D_RUNTIME_DIR"] = str(tmp / "runtime")
    proc, port, endpoint = start_server(tmp, hard_limit, handshake_timeout_s, transport)
    uid = FLOOD_UID if transport == "ipc" else None
    server = psutil.Process(proc.pid)
    try:
        with Log3DClient(port=port, timeout_s=30) as c:
            c.hello()
        cpu0 = sum(server.cpu_times()[:2])
        opened, attempts = mp.Value("i", 0), mp.Value("l", 0)
        floods = [mp.Process(target=flooder, args=(endpoint, seconds, opened, attempts, uid)) for _ in range(processes)]
        t0 = time.monotonic()
        for f in floods:
            f.start()
        latencies, fds, counts = [], [], {}
        time.sleep(1.0)
        while time.monotonic() - t0 < seconds - 0.5:
            with Log3DClient(port=port, timeout_s=30) as c:
                start = time.perf_counter()
                info = c.hello()
                latencies.append(time.perf_counter() - start)
                counts = info.get("connections", {})
            fds.append(server.num_fds())
            time.sleep(max(0.0, 1.0 - latencies[-1]))
        for f in floods:
            f.join()
        cpu = sum(server.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    lat = sorted(latencies)
    return {"transport": transport, "flooder_uid": uid if uid is not None else os.getuid(),
            "connect_attempts": attempts.value, "processes": processes, "handshake_timeout_s": handshake_timeout_s, "seconds": round(wall, 1), "server_descriptor_limit": hard_limit,
            "connections_opened": opened.value, "server_fds_max": max(fds), "hello_count": len(lat),
            "hello_median_s": round(lat[len(lat) // 2], 4), "hello_within_1s": sum(x <= 1.0 for x in lat),
            "hello_max_s": round(lat[-1], 4), "server_cpu_s": round(cpu, 2), "server_counts_last_hello": counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transports", nargs="+", choices=("ipc", "tcp"), default=["ipc", "tcp"],
                        help="the server's transports, one flood each (ipc needs root: its flooders run as uid 65534)")
    parser.add_argument("--processes", type=int, nargs="+", default=[4, 8],
                        help="flooder counts, one flood (and one row) each (default 4 8)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--hard-limit", type=int, default=1024)
    parser.add_argument("--handshake-timeouts", type=float, nargs="+", default=[ServerConfig.handshake_timeout_s],
                        help="the server's handshake timeouts to compare, one flood per timeout and flooder count")
    args = parser.parse_args()
    if "ipc" in args.transports and os.getuid() != 0:
        parser.error("the ipc flood runs its flooders as another user (uid 65534), which needs root")
    rows = [flood_once(tr, p, args.seconds, args.hard_limit, t)
            for tr in args.transports for t in args.handshake_timeouts for p in args.processes]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    lines = [f"| {r['transport']} | {r['flooder_uid']} | {r['handshake_timeout_s']:g} | {r['processes']} | {r['seconds']} | "
             f"{r['connect_attempts']:,} | {r['connections_opened']:,} | {r['server_fds_max']} | "
             f"{r['hello_count']} | {r['hello_median_s']} | {r['hello_within_1s']} | {r['hello_max_s']} | {r['server_cpu_s']} |"
             for r in rows]
    text = ("# Idle-connection flood against `log3d serve` (bench/bench_flood.py)\n\n"
            f"{os.cpu_count()} cores, commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}; the server's "
            f"open-file limit {args.hard_limit} (soft = hard); a keyed client's `hello` once a second. ipc: the "
            f"server's Unix socket in its 0700 runtime folder, flooders as uid {FLOOD_UID}; tcp: loopback port.\n\n"
            "| transport | flooders' uid | handshake timeout s | flooders | flood s | connect attempts | connections opened | server fds (max) | hellos | hello median s | hellos within 1 s | hello max s | server CPU s |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(lines) + "\n\n"
            + "".join(f"The server's own counts at the last hello ({r['transport']}, {r['processes']} flooders, timeout {r['handshake_timeout_s']:g} s): "
                      f"{json.dumps(r['server_counts_last_hello'])}\n" for r in rows))
    print(text)
    (RESULTS / "flood.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / "flood.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
