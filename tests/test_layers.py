"""The layers are enforced, not described: import-linter's contracts (pyproject.toml [tool.importlinter])
and a check that the API process can start without PyTorch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_importing_the_api_imports_no_torch():
    code = (
        "import sys, app.main, app.serve, app.admin, app.sweeper\n"
        "app.main.app.openapi()\n"  # the typed schemas (recipe, report) are built from the contract alone
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'onnxruntime', 'torchvision'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
