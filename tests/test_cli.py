"""The engine's command line, run as a user would, in a separate process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workers.compression.contract.vocabulary import Verdict

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "workers.compression", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_run_prints_a_table_and_writes_the_report(cnn_pt2, digits_npz, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"steps": [{"method": "quantize", "scheme": "fp16"}]}))
    out = tmp_path / "out"
    result = cli(
        "run",
        cnn_pt2,
        "--recipe",
        recipe,
        "--data",
        digits_npz,
        "--out",
        out,
        "--seconds",
        "0.3",
        "--batch",
        "16",
        "--threads",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "baseline (eager)" in result.stdout and "1. quantize fp16" in result.stdout
    assert "speedup b1" in result.stdout and "accuracy" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert (out / report["final"]["artifact_id"]).is_file()
    assert report["baseline"]["latency_ms"]["batch"] == 16


def test_bad_recipe_exits_2_with_the_reason(cnn_pt2, tmp_path):
    result = cli("run", cnn_pt2, "--recipe", '{"steps": [{"method": "quantize", "scheme": "int3"}]}', "--out", tmp_path)
    assert result.returncode == 2
    assert "error (invalid_recipe)" in result.stderr and "scheme" in result.stderr


def test_pickle_exits_2_naming_the_accepted_formats(cnn, tmp_path):
    import torch

    torch.save(cnn, tmp_path / "model.pt")
    result = cli("inspect", tmp_path / "model.pt")
    assert result.returncode == 2
    assert "pickle_refused" in result.stderr and "torch.export" in result.stderr


def test_inspect_and_methods(cnn_pt2):
    info = json.loads(cli("inspect", cnn_pt2).stdout)
    assert info["format"] == "pt2" and info["input"]["shape"] == [None, 1, 8, 8]
    assert info["params"] > 30_000 and info["nonzero_params"] <= info["params"]
    methods = json.loads(cli("methods").stdout)
    assert [m["method"] for m in methods] == ["quantize", "prune", "distill", "export", "auto"]


def test_engine_imports_no_web_or_database_code():
    code = (
        "import sys, workers.compression; "
        "bad = [m for m in ('fastapi', 'sqlalchemy', 'celery', 'app', 'starlette') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.exclusive  # its verdict reads a speed measured on a quiet machine
def test_the_readme_example_runs(tmp_path):
    """README: bench/digits_example.py writes the inputs, then one `run` command."""
    made = subprocess.run(
        [sys.executable, "bench/digits_example.py", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    result = cli(
        "run",
        tmp_path / "digits.pt2",
        "--recipe",
        '{"steps": [{"method": "quantize", "scheme": "fp16"}]}',
        "--data",
        tmp_path / "digits.npz",
        "--out",
        tmp_path / "fp16",
        "--seconds",
        "0.3",
    )
    assert result.returncode == 0, result.stderr
    # whatever this CPU makes of fp16 (smaller, and slower where it has no fp16 arithmetic, or inconclusive
    # when the machine is busy), the verdict is one of the documented ones and the table prints it
    report = json.loads((tmp_path / "fp16" / "report.json").read_text())
    verdict = report["steps"][0]["verdict"]
    assert verdict in {v.value for v in Verdict} and verdict in result.stdout, (verdict, result.stdout)


def test_missing_files_are_named(cnn_pt2, tmp_path):
    result = cli(
        "run",
        tmp_path / "nope.pt2",
        "--recipe",
        '{"steps": [{"method": "export", "format": "onnx"}]}',
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 2 and "no model file at" in result.stderr
    result = cli(
        "run",
        cnn_pt2,
        "--recipe",
        '{"steps": [{"method": "export", "format": "onnx"}]}',
        "--data",
        tmp_path / "nope.npz",
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 2 and "no dataset file at" in result.stderr
