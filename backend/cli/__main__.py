"""``python -m backend.cli``: what the server, ``log3d batch`` and the launchers (accelerate,
torchrun) start."""

import sys

from backend.cli import entry

sys.exit(entry())
