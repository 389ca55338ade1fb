"""What this worker machine has, asked in a subprocess: importing torch (and touching CUDA) in the
worker's main process would cost ~700 MB per pool process and break CUDA after fork."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache


@lru_cache
def worker_has_cuda() -> bool:
    known = os.environ.get("SQUEEZE_WORKER_HAS_CUDA")  # set once by `squeeze-worker` for its pool
    if known in ("0", "1"):
        return known == "1"
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "True"
