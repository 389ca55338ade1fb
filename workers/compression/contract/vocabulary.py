"""The system's one vocabulary: every status, verdict, error code, queue, runtime and event kind the API,
the store, the worker and the engine pass between them, as enums. They are `StrEnum`s, so a member is
stored and compared as its string (the database columns and JSON stay as they were) and the OpenAPI
schema lists the values. Nothing here imports anything but the standard library."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class UploadStatus(StrEnum):
    """A model or dataset: waiting for its inspection, inspected, or refused by it (with the reason)."""

    PENDING = "pending"
    READY = "ready"
    INVALID = "invalid"


class Verdict(StrEnum):
    """What a measured artifact bought, in one word (docs/measurement.md)."""

    FASTER_AND_SMALLER = "faster_and_smaller"
    SMALLER_ONLY = "smaller_only"
    FASTER_ONLY = "faster_only"
    NO_GAIN = "no_gain"
    INCONCLUSIVE = "inconclusive"
    QUALITY_LOST = "quality_lost"


class Runtime(StrEnum):
    """What executes a model: PyTorch eagerly, TorchScript, torch.compile's inductor, onnxruntime, or
    OpenVINO's CPU plugin."""

    EAGER = "eager"
    TORCHSCRIPT = "torchscript"
    INDUCTOR = "inductor"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class Device(StrEnum):
    """Where a job asks to run (`auto`: a GPU when the worker has one) and where it ran."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class CandidateStatus(StrEnum):
    """What became of one of `auto`'s candidates."""

    MEASURED = "measured"
    FAILED = "failed"
    SKIPPED = "skipped"  # not tried: the budget or the search's rules ruled it out
    STOPPED = "stopped"  # the time budget ran out while it was being built or measured


class Queue(StrEnum):
    """Broker queues: jobs by device, and inspections (with webhook retries) on their own."""

    CPU = "cpu"
    GPU = "gpu"
    INSPECT = "inspect"


class EventKind(StrEnum):
    """A job's event stream (`GET /v1/jobs/{id}/events`): what each `event:` line carries."""

    STATUS = "status"
    STAGE = "stage"
    PROGRESS = "progress"
    LOG = "log"
    FRONT = "front"


class JobErrorCode(StrEnum):
    """`error.code` of a failed job or an invalid upload: the worker's own reasons and the engine's."""

    # the worker's
    STEP_FAILED = "step_failed"
    RESOURCE_EXHAUSTED = "resource_exhausted"  # over the job's memory limit
    TIMEOUT = "timeout"  # over the job's time limit
    DISK_EXHAUSTED = "disk_exhausted"  # over the job's disk limit
    WORKER_CRASHED = "worker_crashed"  # the job's process died without a result
    WORKER_LOST = "worker_lost"  # its worker died too often
    NO_GPU = "no_gpu"
    INVALID_OUTPUT = "invalid_output"  # what the job handed back is not what its report says
    INTERNAL = "internal"
    # the engine's (contract/errors.py): bad input found by loading or running it
    ENGINE_ERROR = "engine_error"
    UNSUPPORTED_FORMAT = "unsupported_format"
    PICKLE_REFUSED = "pickle_refused"
    CORRUPT_ARCHIVE = "corrupt_archive"
    EMPTY_FILE = "empty_file"
    INVALID_MODEL = "invalid_model"
    INVALID_DATASET = "invalid_dataset"
    INVALID_RECIPE = "invalid_recipe"
    NO_TOKENIZER = "no_tokenizer"
    NOT_FOUND = "not_found"


class ApiErrorCode(StrEnum):
    """`error.code` of an API answer (README "Routes"); an engine's refusal of an upload's bytes keeps its
    own code (`JobErrorCode`)."""

    BAD_REQUEST = "bad_request"
    MALFORMED_JSON = "malformed_json"
    EMPTY_FILE = "empty_file"
    CORRUPT_ARCHIVE = "corrupt_archive"
    MISSING_FILE = "missing_file"
    UPLOAD_INTERRUPTED = "upload_interrupted"
    UNAUTHORIZED = "unauthorized"
    CSRF_FAILED = "csrf_failed"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    MODEL_NOT_READY = "model_not_ready"
    DATASET_NOT_READY = "dataset_not_ready"
    IN_USE = "in_use"
    ALREADY_FINISHED = "already_finished"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    GONE = "gone"
    TOO_LARGE = "too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    PICKLE_REFUSED = "pickle_refused"
    UNSUPPORTED_FORMAT = "unsupported_format"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_REQUEST = "invalid_request"
    INVALID_RECIPE = "invalid_recipe"
    INVALID_CALLBACK_URL = "invalid_callback_url"
    FORMAT_MISMATCH = "format_mismatch"
    MODEL_INVALID = "model_invalid"
    DATASET_INVALID = "dataset_invalid"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_JOBS = "too_many_jobs"
    TOO_MANY_PENDING_UPLOADS = "too_many_pending_uploads"
    TOO_MANY_REQUESTS = "too_many_requests"
    BUSY = "busy"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    INTERNAL = "internal"
