"""`log3d serve`: the local job server for the Blender add-on and `log3d batch`."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from backend import protocol as proto
from backend.cli import arguments
from backend.listen import TRANSPORTS
from backend.server import Server, ServerConfig


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal

    config = ServerConfig(host=args.host, port=args.port, device=args.device,
                          checkpoint=str(args.checkpoint) if args.checkpoint else None,
                          connection_file=args.connection_file, allow_remote=args.allow_remote,
                          runs_dir=args.runs_dir, data_roots=tuple(args.data_root),
                          max_train_runs=args.max_train_runs,
                          handshake_timeout_s=args.handshake_timeout, transport=args.transport).validate()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="log3d serve: %(message)s")
    server = Server(config)
    port = server.bind()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    weights = (f"LoG-VAE '{server.model.info['preset']}' on {server.model.device}" if server.model.info
               else "no LoG-VAE weights: direct mode only")
    print(f"log3d serve: listening on {server.endpoint} as server {port} (protocol {proto.PROTOCOL_VERSION}; {weights}"
          f"; clients authenticate with the keys in {server.connection_file})", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the local job server (ZeroMQ) for the Blender add-on and `log3d batch`")
    arguments.add_server_arguments(p, "address to listen on (default 127.0.0.1; any other needs --allow-remote)",
                         "the server's number: its TCP port, or with the ipc transport the name of its socket and connection file (default {port}; 0: any free one)",
                         "where to write the keys clients need (default: the per-user runtime folder, "
                         "$XDG_RUNTIME_DIR/log3d/server-PORT.json or ~/.log3d/runtime/server-PORT.json)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host (peers still need the connection file's CURVE keys)")
    arguments.add_network_arguments(p, "cpu, cuda or auto, for the LoG-VAE", "LoG-VAE weights (default: the shipped ones, if any)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where training runs go (RUNS_DIR/<job id>)")
    p.add_argument("--data-root", type=Path, action="append", default=[],
                   help="a folder train.start may read caches and --init weights from (repeatable; default: none)")
    p.add_argument("--max-train-runs", type=int, default=1, help="training runs alive at once (default 1)")
    p.add_argument("--handshake-timeout", type=float, default=ServerConfig.handshake_timeout_s, metavar="SECONDS",
                   help="drop a connection that has not completed the CURVE handshake by then "
                        f"(default {ServerConfig.handshake_timeout_s:g}; see backend/handshakes.py)")
    p.add_argument("--transport", choices=TRANSPORTS, default=None,
                   help="ipc: a Unix socket beside the connection file, which no other user can reach (the default "
                        "on Linux and macOS); tcp: the port (Windows, remote clients); see backend/listen.py")
    arguments.add_quiet_argument(p, "log only warnings")
    p.set_defaults(func=_cmd_serve)
