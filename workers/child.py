"""The child process a worker runs each inspection and job in: `python -m workers.child SPEC.json`.

Untrusted model files are loaded only here. The parent (workers/supervisor.py) limits its memory and
time and kills it on cancel, so a crash, an OOM or a hang fails one job and leaves the worker alive.
Protocol (workers/compression/contract/protocol.py): the spec file is a `Spec`; each line on the original
stdout is one `Event` (progress, checkpoint, partial, and a final completed/inspected or failed); whatever
libraries print goes to stderr, which the parent keeps as the job's log."""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import sys
import time
import traceback

from pydantic import BaseModel

from workers.compression.contract.errors import EngineError, JobErrorCode
from workers.compression.contract.protocol import (
    CheckpointEvent,
    CompletedEvent,
    FailedEvent,
    InspectDataset,
    InspectedEvent,
    InspectModel,
    PartialEvent,
    ProgressEvent,
    RunRecipe,
    Spec,
)
from workers.lifecycle import die_with_parent


class Channel:
    def __init__(self) -> None:
        # the protocol keeps the real stdout; fd 1 now points at stderr, so stray prints cannot corrupt it
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        self._last_progress = 0.0
        self._last_stage: str | None = None

    def send(self, event: BaseModel) -> None:
        self._out.write(event.model_dump_json() + "\n")

    def progress(self, fraction: float, stage: str) -> None:
        # a new stage (a training epoch, a step) always goes out; progress within one stage is throttled
        now = time.monotonic()
        if stage != self._last_stage or now - self._last_progress >= 0.25 or fraction >= 1.0:
            self._last_progress, self._last_stage = now, stage
            self.send(ProgressEvent(progress=round(float(fraction), 4), stage=stage))


def _limit_memory(limit_mb: int | None) -> None:
    # a backstop under the parent's resident-memory watchdog: one huge allocation fails here at once
    # (as a MemoryError / allocator error) instead of pushing the machine into swap first
    if limit_mb:
        cap = limit_mb * 2 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))


def _run(work: InspectModel | InspectDataset | RunRecipe, channel: Channel) -> BaseModel:
    if isinstance(work, InspectModel):
        from workers.compression.inspection import inspect_model

        return InspectedEvent(info=inspect_model(work.path, **work.load.model_dump(exclude_none=True)))
    if isinstance(work, InspectDataset):
        from workers.compression.data.inspect import inspect_dataset  # torch-free: starts in a fraction of a second

        return InspectedEvent(info=inspect_dataset(work.path))
    from workers.compression.pipeline import Hooks, run

    report = run(
        work.model_path,
        work.recipe,
        out_dir=work.out_dir,
        data_path=work.data_path,
        eval_data_path=work.eval_data_path,
        load=work.load,
        settings=work.measure,
        hooks=Hooks(
            progress=channel.progress,
            on_checkpoint=lambda path: channel.send(CheckpointEvent(path=str(path))),
            on_partial=lambda report: channel.send(PartialEvent(report=report)),
        ),
        models=work.models,
        checkpoint_dir=work.checkpoint_dir,
    )
    return CompletedEvent(report=report)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean(message: str, limit: int = 1500) -> str:
    """Library messages carry terminal colours and pages of advice; keep what a person can read."""
    message = ANSI.sub("", message).strip()
    return message if len(message) <= limit else message[: limit - 20] + " … (see the job log)"


def main(spec_path: str) -> int:
    channel = Channel()
    with open(spec_path) as f:
        spec = Spec.model_validate_json(f.read())
    # a worker killed with SIGKILL must not leave its job running as an orphan
    die_with_parent(signal.SIGKILL, spec.parent_pid)
    _limit_memory(spec.memory_limit_mb)
    try:
        channel.send(_run(spec.work, channel))
        return 0
    except MemoryError:
        channel.send(FailedEvent(code=JobErrorCode.RESOURCE_EXHAUSTED, message="the job ran out of memory"))
    except Exception as e:
        if isinstance(e, EngineError):
            print(f"{e.code}: {e.message}", file=sys.stderr)
            # a failed run may still have measured what it made (a step's best candidate): the worker stores it
            channel.send(FailedEvent(code=e.code, message=_clean(e.message), report=e.report))
        elif isinstance(e, OSError) and e.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
            message = f"the job ran out of disk (its limit, or /tmp's): {e.strerror}"
            channel.send(FailedEvent(code=JobErrorCode.DISK_EXHAUSTED, message=message))
        elif "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            message = _clean(f"the job ran out of memory: {e}", 500)
            channel.send(FailedEvent(code=JobErrorCode.RESOURCE_EXHAUSTED, message=message))
        else:
            traceback.print_exc()
            channel.send(FailedEvent(code=JobErrorCode.INTERNAL, message=_clean(f"{type(e).__name__}: {e}")))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
