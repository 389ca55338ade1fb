"""The child process a worker runs each inspection and job in: `python -m workers.child SPEC.json`.

Untrusted model files are loaded only here. The parent (workers/supervisor.py) limits its memory and
time and kills it on cancel, so a crash, an OOM or a hang fails one job and leaves the worker alive.
Protocol: one JSON object per line on the original stdout (progress, log, and a final result or error);
whatever libraries print goes to stderr, which the parent keeps as the job's log."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sys
import time
import traceback

from workers.lifecycle import die_with_parent


class Channel:
    def __init__(self) -> None:
        # the protocol keeps the real stdout; fd 1 now points at stderr, so stray prints cannot corrupt it
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        self._last_progress = 0.0
        self._last_stage: str | None = None

    def send(self, **message) -> None:
        self._out.write(json.dumps(message) + "\n")

    def progress(self, fraction: float, stage: str) -> None:
        # a new stage (a training epoch, a step) always goes out; progress within one stage is throttled
        now = time.monotonic()
        if stage != self._last_stage or now - self._last_progress >= 0.25 or fraction >= 1.0:
            self._last_progress, self._last_stage = now, stage
            self.send(event="progress", progress=round(float(fraction), 4), stage=stage)


def _limit_memory(limit_mb: int | None) -> None:
    # a backstop under the parent's resident-memory watchdog: one huge allocation fails here at once
    # (as a MemoryError / allocator error) instead of pushing the machine into swap first
    if limit_mb:
        cap = limit_mb * 2 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))


def _run(spec: dict, channel: Channel) -> dict:
    action = spec["action"]
    if action == "inspect_model":
        from workers.compression.inspection import inspect_model

        return inspect_model(spec["path"], format=spec.get("format"), **spec.get("load_options", {}))
    if action == "inspect_dataset":
        from workers.compression.inspection import inspect_dataset

        return inspect_dataset(spec["path"])
    if action == "run_recipe":
        from workers.compression import MeasureSettings, run_recipe

        return run_recipe(
            spec["model_path"],
            spec["recipe"],
            out_dir=spec["out_dir"],
            data_path=spec.get("data_path"),
            eval_data_path=spec.get("eval_data_path"),
            load=spec.get("load_options"),
            settings=MeasureSettings(**spec["measure"]),
            progress=channel.progress,
            models=spec.get("models"),
            checkpoint_dir=spec.get("checkpoint_dir"),
            on_checkpoint=lambda path: channel.send(event="checkpoint", path=str(path)),
            on_partial=lambda report: channel.send(event="partial", report=report),
        )
    raise ValueError(f"unknown action {action!r}")


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean(message: str, limit: int = 1500) -> str:
    """Library messages carry terminal colours and pages of advice; keep what a person can read."""
    message = ANSI.sub("", message).strip()
    return message if len(message) <= limit else message[: limit - 20] + " … (see the job log)"


def main(spec_path: str) -> int:
    channel = Channel()
    with open(spec_path) as f:
        spec = json.load(f)
    # a worker killed with SIGKILL must not leave its job running as an orphan
    die_with_parent(signal.SIGKILL, spec["parent_pid"])
    _limit_memory(spec.get("memory_limit_mb"))
    try:
        channel.send(event="result", data=_run(spec, channel))
        return 0
    except MemoryError:
        channel.send(event="error", code="resource_exhausted", message="the job ran out of memory")
    except Exception as e:
        from workers.compression.errors import EngineError

        if isinstance(e, EngineError):
            print(f"{e.code}: {e.message}", file=sys.stderr)
            # a failed run may still have measured what it made (a step's best candidate): the worker stores it
            channel.send(event="error", code=e.code, message=_clean(e.message), results=e.report)
        elif "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            channel.send(
                event="error", code="resource_exhausted", message=_clean(f"the job ran out of memory: {e}", 500)
            )
        else:
            traceback.print_exc()
            channel.send(event="error", code="internal", message=_clean(f"{type(e).__name__}: {e}"))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
