"""The client: HTTP with retries, and small resource objects (Model, Dataset, Job, Artifact)."""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx

from .errors import ChecksumMismatch, ConnectionFailed, JobFailed, SqueezeError, from_response
from .speedup import Speedup

RETRY_STATUS = {502, 503, 504}
TERMINAL = {"succeeded", "failed", "cancelled"}
CHUNK = 1 << 20
T = TypeVar("T")


class Client:
    """`Client(url, api_key)`. Connection errors and 502/503/504 are retried with exponential back-off
    (and jitter); 4xx answers never are: they raise at once, typed, with the server's code."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        if not api_key:
            raise SqueezeError("an API key is needed (SQUEEZE_API_KEY)", code="no_api_key")
        self.url = url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "squeeze-client/0.1"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def request(self, method: str, path: str, *, body: Callable[[], dict] | None = None, **kwargs) -> httpx.Response:
        """One call with retries. `body` makes fresh keyword arguments per attempt (an upload reopens its file)."""

        def attempt() -> httpx.Response:
            return _raise_for_status(self.http.request(method, path, **(body() if body else {}), **kwargs))

        return self._with_retries(attempt, failure=f"cannot reach {self.url}")

    def _with_retries(self, attempt: Callable[[], T], *, failure: str) -> T:
        """Runs `attempt` until it returns, at most `retries` + 1 times: the one retry loop of the client.
        Transport errors and 502/503/504 (raised by `_raise_for_status`) are retried after a back-off with
        jitter that honours Retry-After; other errors (4xx above all) propagate at once. After the last try
        a transport error raises ConnectionFailed (`failure: error`), a 5xx its typed error."""
        for n in range(self.retries + 1):
            try:
                return attempt()
            except httpx.TransportError as e:
                if n == self.retries:
                    raise ConnectionFailed(f"{failure}: {e}", code="connection_failed") from None
                self._sleep(n, None)
            except _Retryable as e:
                if n == self.retries:
                    raise from_response(e.status, e.payload) from None
                self._sleep(n, e.retry_after)
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2**attempt * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))

    def get_json(self, path: str, **params) -> dict:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    # ------------------------------------------------------------------ uploads

    def _upload(self, kind: str, path: str | Path, fields: dict, progress: bool) -> dict:
        path = Path(path)
        size = path.stat().st_size

        def body() -> dict:
            reader = _ProgressReader(path, size, progress)
            return {"files": {"file": (path.name, reader)}, "data": {k: v for k, v in fields.items() if v is not None}}

        return self.request("POST", f"/v1/{kind}", body=body).json()

    def upload_model(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        input_shape: list[int] | None = None,
        format: str | None = None,
        arch: str | None = None,
        arch_kwargs: dict | None = None,
        wait: bool = True,
        progress: bool = False,
    ) -> Model:
        """Uploads a model file; by default waits until a worker has inspected it (ready or invalid).
        Safetensors weights need `arch` (a torchvision name such as "resnet18", or "timm:NAME") and, when
        the architecture takes any, its constructor's `arch_kwargs` (e.g. {"num_classes": 10})."""
        fields = {
            "name": name,
            "format": format,
            "input_shape": json.dumps(input_shape) if input_shape else None,
            "arch": arch,
            "arch_kwargs": json.dumps(arch_kwargs) if arch_kwargs is not None else None,
        }
        model = Model(self, self._upload("models", path, fields, progress))
        return model.wait() if wait else model

    def upload_dataset(
        self, path: str | Path, *, name: str | None = None, wait: bool = True, progress: bool = False
    ) -> Dataset:
        dataset = Dataset(self, self._upload("datasets", path, {"name": name}, progress))
        return dataset.wait() if wait else dataset

    def model(self, model_id: str) -> Model:
        return Model(self, self.get_json(f"/v1/models/{model_id}"))

    def dataset(self, dataset_id: str) -> Dataset:
        return Dataset(self, self.get_json(f"/v1/datasets/{dataset_id}"))

    # ------------------------------------------------------------------ jobs

    def submit(
        self,
        model: Model | str,
        recipe: dict,
        *,
        dataset: Dataset | str | None = None,
        eval_dataset: Dataset | str | None = None,
        device: str = "auto",
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submits a job. An Idempotency-Key is sent (a new one per call unless given), so a retried
        request cannot create a second job."""
        body = {"model_id": _id(model), "recipe": recipe, "device": device}
        if dataset is not None:
            body["dataset_id"] = _id(dataset)
        if eval_dataset is not None:
            body["eval_dataset_id"] = _id(eval_dataset)
        if name:
            body["name"] = name
        key = idempotency_key or str(uuid.uuid4())
        response = self.request("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
        return Job(self, response.json())

    def job(self, job_id: str) -> Job:
        return Job(self, self.get_json(f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None, limit: int | None = None) -> Iterator[Job]:
        """Newest first, following the cursor."""
        cursor, seen = None, 0
        while True:
            page = self.get_json("/v1/jobs", status=status, cursor=cursor, limit=100)
            for item in page["items"]:
                yield Job(self, item)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, job_id: str) -> Job:
        return Job(self, self.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def artifact(self, artifact_id: str) -> Artifact:
        return Artifact(self, self.get_json(f"/v1/artifacts/{artifact_id}"))

    def methods(self) -> list[dict]:
        """The catalogue: every recipe method with its parameters (JSON Schema) and formats."""
        return self.get_json("/v1/methods")["methods"]


def _id(obj) -> str:
    return obj if isinstance(obj, str) else obj.id


class _ProgressReader:
    """A file object for httpx's multipart body that advances a progress bar as it is read."""

    def __init__(self, path: Path, size: int, progress: bool):
        self.file = open(path, "rb")  # noqa: SIM115 - closed when fully read
        self.bar = _bar(size, f"upload {path.name}") if progress else None

    def read(self, n: int = -1) -> bytes:
        chunk = self.file.read(n if n and n > 0 else CHUNK)
        if self.bar is not None:
            self.bar.update(len(chunk))
        if not chunk:
            self.file.close()
            if self.bar is not None:
                self.bar.close()
        return chunk


def _bar(total: int | None, desc: str, unit: str = "B", percent: bool = False):
    from tqdm import tqdm

    if percent:  # a job's progress: percent done and the stage, no rate ("%/s" means nothing to a reader)
        return tqdm(total=total, desc=desc, leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", leave=False)


class _Resource:
    path = ""

    def __init__(self, client: Client, data: dict):
        self.client, self.data = client, data

    @property
    def id(self) -> str:
        return self.data["id"]

    def __getitem__(self, key):
        return self.data[key]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.data.get('status', '')}>".replace(" >", ">")

    def refresh(self):
        self.data = self.client.get_json(f"{self.path}/{self.id}")
        return self


class _Upload(_Resource):
    @property
    def status(self) -> str:
        return self.data["status"]

    def wait(self, timeout: float = 600.0, every: float = 0.5):
        """Until the worker has inspected it; raises InvalidRequest with the reason when it is invalid."""
        deadline = time.monotonic() + timeout
        while self.status == "pending":
            if time.monotonic() > deadline:
                raise SqueezeError(f"{self.id} is still pending after {timeout:.0f} s", code="timeout")
            time.sleep(every)
            self.refresh()
        if self.status == "invalid":
            from .errors import InvalidRequest

            error = self.data.get("error") or {}
            raise InvalidRequest(error.get("message", "invalid upload"), code=error.get("code", "invalid"))
        return self


class Model(_Upload):
    path = "/v1/models"


class Dataset(_Upload):
    path = "/v1/datasets"


class Job(_Resource):
    path = "/v1/jobs"

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def results(self) -> dict | None:
        return self.data.get("results")

    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact(self.client, a) for a in self.data.get("artifacts") or []]

    @property
    def speedup(self) -> Speedup | None:
        """The final artifact's measured speedup with its 95 % intervals (`str()` of it reads as a sentence)."""
        results = self.results
        return Speedup.of(results["final"]) if results else None

    def wait(self, timeout: float | None = None, *, progress: bool = False, every: float = 1.0) -> Job:
        """Polls until the job ends; shows a progress bar with the stage when asked. Returns the job when
        it succeeded; raises JobFailed (with the server's code and message) when it failed or was cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _bar(100, self.id, unit="%", percent=True) if progress else None
        try:
            while True:
                if bar is not None:
                    bar.n = round(100 * (self.data.get("progress") or 0), 1)
                    bar.set_postfix_str((self.data.get("stage") or self.status)[:60], refresh=True)
                if self.status in TERMINAL:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise SqueezeError(f"job {self.id} is still {self.status} after {timeout:.0f} s", code="timeout")
                time.sleep(every)
                self.refresh()
        finally:
            if bar is not None:
                bar.close()
        if self.status != "succeeded":
            raise JobFailed(self)
        return self

    def cancel(self) -> Job:
        self.data = self.client.cancel(self.id).data
        return self


class Artifact(_Resource):
    path = "/v1/artifacts"

    @property
    def sha256(self) -> str:
        return self.data["sha256"]

    def download(self, path: str | Path | None = None, *, progress: bool = False) -> Path:
        """Streams the file to `path` (default: its own file name here; a folder, existing or ending in "/",
        gets the file under its own name), checking its sha256; a file that does not match is removed and
        ChecksumMismatch raised."""
        target = Path(path or self.data["filename"])
        if str(path or "").endswith(("/", "\\")):  # "out/": a folder, made if it is not there yet
            target.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            target = target / self.data["filename"]
        partial = target.with_name(target.name + ".part")

        def attempt() -> str:
            digest = hashlib.sha256()  # afresh per attempt: a retry rewrites the partial file from its start
            with self.client.http.stream("GET", f"/v1/artifacts/{self.id}/download") as response:
                _raise_for_status(response)
                size = int(response.headers.get("content-length", 0)) or None
                bar = _bar(size, target.name) if progress else None
                try:
                    with open(partial, "wb") as out:
                        for chunk in response.iter_bytes(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
            return digest.hexdigest()

        got = self.client._with_retries(attempt, failure=f"download of {self.id} failed")
        if got != self.sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"downloaded bytes hash to {got}, the artifact is {self.sha256}",
                code="checksum_mismatch",
            )
        partial.replace(target)
        return target


def _json(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None


class _Retryable(Exception):
    """A 502/503/504 answer, raised inside an attempt so that `Client._with_retries` tries again."""

    def __init__(self, status: int, payload, retry_after: str | None):
        super().__init__(f"HTTP {status}")
        self.status, self.payload, self.retry_after = status, payload, retry_after


def _raise_for_status(response: httpx.Response) -> httpx.Response:
    """Returns a successful response; raises _Retryable for 502/503/504 and the typed error for any other
    error status. A streamed error response is read (it is small) so its JSON error can be decoded."""
    if response.status_code < 400:
        return response
    response.read()
    payload = _json(response)
    if response.status_code in RETRY_STATUS:
        raise _Retryable(response.status_code, payload, response.headers.get("retry-after"))
    raise from_response(response.status_code, payload)
