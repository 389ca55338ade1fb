"""Container health check for a worker: exits 0 when a Squeeze worker on this host answers a ping
through the broker (so a worker that lost its broker connection is reported unhealthy)."""

from __future__ import annotations

import socket
import sys

from app.store.broker import get_celery


def main() -> int:
    replies = get_celery().control.ping(timeout=10) or []
    here = f"squeeze@{socket.gethostname()}"
    return 0 if any(name.startswith(here) for reply in replies for name in reply) else 1


if __name__ == "__main__":
    sys.exit(main())
