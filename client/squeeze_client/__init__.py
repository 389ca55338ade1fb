"""Squeeze's Python SDK: upload models and datasets, submit compression jobs, wait, download results.

from squeeze_client import Client
c = Client("http://127.0.0.1:8000", api_key="sqz_…")
model = c.upload_model("digits.pt2")
data = c.upload_dataset("digits.npz")
job = c.submit(model, {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}, dataset=data)
job.wait(progress=True)
print(job.speedup)  # medians with 95 % intervals, flagged when noisy
job.artifacts[0].download("digits_int8.pt2")
"""

from .client import Artifact, Client, Dataset, Job, Model
from .errors import (
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    JobFailed,
    NotFound,
    RateLimited,
    ServerError,
    SqueezeError,
    TooLarge,
    Unauthorized,
    UnsupportedMedia,
)
from .presets import PRESETS
from .speedup import Speedup

__all__ = [
    "PRESETS",
    "Artifact",
    "ChecksumMismatch",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "InvalidRequest",
    "Job",
    "JobFailed",
    "Model",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Speedup",
    "SqueezeError",
    "TooLarge",
    "Unauthorized",
    "UnsupportedMedia",
]
