"""The CLI's argument handling, without a server: global flags anywhere, the auto budget options, tables
that wrap instead of cutting."""

from __future__ import annotations

import pytest
from squeeze_client import PRESETS
from squeeze_client.cli import _measure_line, _parser, _UsageError, _with_search_options


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "models", "upload", "m.pt2"],
        ["models", "upload", "m.pt2", "--json"],
        ["models", "--json", "upload", "m.pt2"],
    ],
)
def test_json_works_before_or_after_the_sub_command(argv):
    assert _parser().parse_args(argv).json is True


def test_url_and_key_anywhere_and_defaults_kept(monkeypatch):
    monkeypatch.setenv("SQUEEZE_URL", "http://env:1")
    monkeypatch.setenv("SQUEEZE_API_KEY", "sqz_env")
    args = _parser().parse_args(["jobs", "list", "--url", "http://flag:2", "--api-key", "sqz_flag"])
    assert (args.url, args.api_key, args.json) == ("http://flag:2", "sqz_flag", False)
    args = _parser().parse_args(["jobs", "list"])
    assert (args.url, args.api_key) == ("http://env:1", "sqz_env")
    args = _parser().parse_args(["--url", "http://before:3", "jobs", "show", "job_1"])
    assert args.url == "http://before:3"


def test_auto_budget_and_accuracy_options():
    args = _parser().parse_args(
        [
            "jobs",
            "submit",
            "--model",
            "mdl_1",
            "--preset",
            "auto",
            "--budget-minutes",
            "5",
            "--max-accuracy-drop",
            "0.02",
        ]
    )
    recipe = _with_search_options(PRESETS[args.preset], args.budget_minutes, args.max_accuracy_drop)
    [step] = recipe["steps"]
    assert step["budget_minutes"] == 5 and step["max_accuracy_drop"] == 0.02
    assert PRESETS["auto"]["steps"][0]["budget_minutes"] == 15  # the preset itself is untouched
    with pytest.raises(_UsageError, match="use --preset auto"):
        _with_search_options(PRESETS["int8"], 5, None)


def test_a_long_row_label_wraps_instead_of_being_cut():
    m = {"latency_ms": {"b1": {"p50": 1.0}, "bN": {"p50": 2.0}}, "size_bytes": 1000, "accuracy": 0.9}
    step = {"speedup_b1": 2.0, "speedup_bN": 3.0, "verdict": "faster_and_smaller"}
    text = _measure_line("1. prune structured pruning with recovery fine-tuning", m, step)
    assert "structured pruning" in text.replace("\n", " ") and "fine-tuning" in text
    assert all(len(line) <= 28 for line in text.splitlines()[:-1])


def test_a_download_path_ending_in_a_slash_is_a_folder(tmp_path, monkeypatch):
    import hashlib

    from squeeze_client.client import Artifact

    body = b"artifact bytes"

    class Stream:
        def __init__(self, *a, **k):
            self.status_code, self.headers = 200, {"content-length": str(len(body))}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def raise_for_status(self):
            pass

        def iter_bytes(self, *a, **k):
            yield body

    class FakeClient:
        class http:
            stream = Stream

        def _with_retries(self, attempt, failure):
            return attempt()

    data = {"id": "art_1", "filename": "model.pt2", "sha256": hashlib.sha256(body).hexdigest()}
    path = Artifact(FakeClient(), data).download(f"{tmp_path}/new-folder/")
    assert path == tmp_path / "new-folder" / "model.pt2" and path.read_bytes() == body
