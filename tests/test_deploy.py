"""The production shape: docker-compose.yml and the Dockerfile. No Docker engine runs here, so the
compose file is checked with `docker compose config` where that client exists, and structurally always;
the same entry points are started without containers by the service tests."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.stack import ROOT


def test_compose_file_has_the_production_shape():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "worker", "postgres", "redis"}
    for name in services:
        assert "healthcheck" in services[name], name
    assert set(compose["volumes"]) >= {"blobs", "pgdata"}
    env = services["api"]["environment"]
    assert env["SQUEEZE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["SQUEEZE_BROKER_URL"].startswith("redis://")
    assert services["worker"]["environment"] == env
    [gpu] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["count"] == "${SQUEEZE_GPUS:-0}"  # 0 by default: CPU hosts start
    assert services["api"]["command"][:3] == ["python", "-m", "app.serve"]
    assert services["worker"]["command"] == ["squeeze-worker"]


def test_docker_compose_config_where_the_client_exists():
    docker = shutil.which("docker")
    has_compose = docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    if not has_compose:
        # this machine kind ships the docker client without the compose plugin; the structural test
        # above still runs
        import pytest

        pytest.skip("docker compose is not installed here")
    out = subprocess.run([docker, "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_dockerfile_entry_points_exist():
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.14.1" in text and "app.serve" in text
    copied = " ".join(line for line in text.splitlines() if line.startswith("COPY "))
    for path in ("alembic.ini", "migrations", "app", "workers", "pyproject.toml"):
        assert path in copied, path
    from importlib.metadata import entry_points

    assert "squeeze-worker" in {e.name for e in entry_points(group="console_scripts")}


def test_the_production_shape_keeps_the_sandbox():
    """The image has bubblewrap; only the worker container may create the sandbox's user namespaces, without
    added capabilities or privileged mode; the API container, which never loads a model, gets nothing."""
    assert "bubblewrap" in (ROOT / "Dockerfile").read_text()
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker, api = services["worker"], services["api"]
    assert set(worker["security_opt"]) == {"seccomp=unconfined", "apparmor=unconfined"}
    assert not worker.get("privileged") and not worker.get("cap_add")
    assert "security_opt" not in api and "SQUEEZE_SANDBOX" not in worker["environment"]
