"""The sandbox every inspection and job child runs in: Debian's bubblewrap (`bwrap`), started by the
trusted parent (workers/supervisor.py). Hand-written around bwrap rather than a container runtime: a job
child must start in milliseconds inside an already-running worker (also inside a container), and bwrap
is the small setuid-free tool Flatpak uses for exactly that.

What each layer blocks (README "Isolation"):
- its own unprivileged user: outside the sandbox the child runs as a uid of its own (a per-job uid when
  the worker is root, else the worker's own non-root uid), never root; inside it is uid 65534 with no
  capabilities, in a user namespace;
- no network: a network namespace with only a loopback that leads nowhere, so no socket reaches the
  API, the database, the broker, the blob store or the internet;
- its own view of the file system: an empty root holding only the system's read-only /usr, the Python
  installation and the engine's code (read-only), the job's input files (read-only, one by one), and two
  writable folders (out, checkpoints); no /etc, /root, repository, var/, blob store or other job;
- its own pid, IPC and UTS namespaces: it cannot see or signal the worker or other jobs; /proc shows only
  its own processes, so /proc/1/environ is the sandbox's own (empty) environment;
- a minimal environment: no SQUEEZE_*, database, broker, blob or AWS_* variables reach it;
- limits: resident memory and wall time (the supervisor's watchdog), a process count (RLIMIT_NPROC on its
  own uid), file size (RLIMIT_FSIZE), a size-limited tmpfs for /tmp and a disk quota on its writable
  folders (the supervisor's watchdog), no core dumps.
The child hands back artifacts in `out/` and events on its stdout; the parent validates both
(workers/results.py) and alone writes to the store."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import workers
from workers.compression.contract.inspection import Isolation

SANDBOX_ROOT = Path("/job")  # the child's view of its folder
CODE_ROOT = Path("/opt/squeeze")  # where the engine's code appears, read-only
NOBODY = 65534
# variables a job may need from the worker's environment: none of them carries a secret
PASSED_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TZ")


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot create its namespaces here; the worker refuses to start."""


@dataclass(frozen=True)
class SandboxLimits:
    processes: int = 1024  # threads count too: torch and inductor's compile workers use many
    disk_mb: int = 20_480  # out/ + checkpoints/ (+ the compile cache) + the stderr file together
    tmp_mb: int = 2048  # the private /tmp, a tmpfs (in memory, so kept small)
    log_bytes: int = 8 * 2**20  # the child's stderr on the worker's disk: past this only its tail is kept
    uid_base: int = 200_000  # per-job uids when the worker is root: uid_base + (job slot)


@dataclass
class Mounts:
    """The child's file system view: `host` is the job's folder on the worker, private to the parent."""

    host: Path
    sandboxed: bool = True  # False (SQUEEZE_SANDBOX=off): the child sees the host paths themselves
    inputs: dict[str, Path] = field(default_factory=dict)  # sandbox path -> host file, read-only
    compile_cache: bool = False  # a writable copy of the tenant's compiler cache (workers/compile_cache.py)

    @property
    def out(self) -> Path:
        return self.host / "out"

    @property
    def checkpoints(self) -> Path:
        return self.host / "checkpoints"

    @property
    def cache(self) -> Path:
        return self.host / "cache"

    def input(self, host_file: str | Path, name: str) -> str:
        """The sandbox path under which the child reads `host_file` (an upload, a dataset)."""
        if not self.sandboxed:
            return str(host_file)
        path = SANDBOX_ROOT / "in" / name
        self.inputs[str(path)] = Path(host_file)
        return str(path)

    def sandbox_path(self, host: Path) -> str:
        """Where a file or folder of the job's appears inside."""
        return str(SANDBOX_ROOT / host.relative_to(self.host)) if self.sandboxed else str(host)

    def host_file(self, sandbox_path: str, folder: Path) -> Path | None:
        """The host file behind a path the child named inside `folder` (its checkpoints), or None when
        the path leads anywhere else: a child's paths are not trusted."""
        inside = Path(sandbox_path)
        root = Path(self.sandbox_path(folder))
        if inside.parent != root or inside.name in ("", ".", ".."):
            return None
        return folder / inside.name

    def writable(self) -> list[Path]:
        """The child's writable folders, all counted in its disk quota."""
        return [self.out, self.checkpoints, *([self.cache] if self.compile_cache else [])]

    def environment(self) -> dict[str, str]:
        """Variables that point the child at its folders: the compilers' caches at the tenant's copy, else
        at the private /tmp (empty at every start)."""
        cache = self.sandbox_path(self.cache) if self.compile_cache else "/tmp"
        return {"TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor", "TRITON_CACHE_DIR": f"{cache}/triton"}


def _bwrap() -> str | None:
    return shutil.which("bwrap")


def _job_uid(limits: SandboxLimits, workdir: Path) -> int | None:
    """A uid of the job's own when the worker is root (so process limits and file ownership are the job's
    alone); None when the worker is not root and the child runs as the worker's own uid."""
    if os.geteuid() != 0:
        return None
    return limits.uid_base + (zlib.crc32(str(workdir).encode()) & 0xFFFF)


def _python_paths() -> list[Path]:
    """What the interpreter needs: the virtual environment and the installation it points at."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
    return sorted(p for p in paths if p.exists() and not str(p).startswith("/usr/"))


def _python_links() -> list[tuple[Path, Path]]:
    """A Python reached through a symlink (a `.venv` linked from another checkout): the child is started as
    `sys.executable`, so its unresolved path must lead to the bound installation inside too."""
    prefix = Path(sys.prefix).absolute()
    resolved = prefix.resolve()
    # a link inside /usr or inside a bound installation is there already (bwrap could not make it again)
    inside = [Path("/usr"), *_python_paths()]
    if prefix == resolved or any(prefix.is_relative_to(p) for p in inside):
        return []
    return [(prefix, resolved)]


def _device_args() -> list[str]:
    """NVIDIA devices, when the worker has them: a CUDA job needs the device files, nothing else of /dev."""
    args: list[str] = []
    for dev in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind", str(dev), str(dev)]
    if args:
        args += ["--ro-bind-try", "/sys", "/sys"]
    return args


def bwrap_command(mounts: Mounts, argv: list[str], limits: SandboxLimits, uid: int | None) -> list[str]:
    """`uid` set: the worker is root, bwrap sets the sandbox up as root (no user namespace needed to bind
    any path) and `setpriv` drops to the job's uid with no capabilities, no bounding set and no_new_privs
    before anything of the job runs. `uid` None: the worker is not root, bwrap runs unprivileged in a user
    namespace (uid 65534 inside, the worker's uid outside)."""
    cmd = [_bwrap() or "bwrap"]
    if uid is None:
        cmd += ["--unshare-all", "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL"]
    else:
        cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        cmd += ["--cap-drop", "ALL", *[a for c in ("SETUID", "SETGID", "SETPCAP") for a in ("--cap-add", f"CAP_{c}")]]
    cmd += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{link}"):  # merged /usr: the usual top-level links
            cmd += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
    # /tmp first: a Python installation under /tmp (a checkout there) is bound over it, not hidden by it
    cmd += ["--size", str(limits.tmp_mb * 2**20), "--perms", "1777", "--tmpfs", "/tmp"]
    binds = [(path, path) for path in _python_paths()]
    binds.append((Path(workers.__file__).resolve().parent, CODE_ROOT / "workers"))
    binds += [(host, Path(inside)) for inside, host in mounts.inputs.items()]
    binds.append((mounts.host / "spec.json", SANDBOX_ROOT / "spec.json"))
    # bwrap makes missing parents 0700: the job's uid could not walk through them
    links = _python_links()
    places = [inside for _, inside in binds] + [link for link, _ in links]
    for parent in sorted({p for inside in places for p in inside.parents if str(p) != "/"}, key=str):
        cmd += ["--perms", "0755", "--dir", str(parent)]
    for host, inside in binds:
        cmd += ["--ro-bind", str(host), str(inside)]
    for link, target in links:
        cmd += ["--symlink", str(target), str(link)]
    cmd += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]  # core counts for torch
    cmd += ["--proc", "/proc", "--dev", "/dev", *_device_args()]
    for folder in mounts.writable():
        cmd += ["--bind", str(folder), mounts.sandbox_path(folder)]
    cmd += ["--chdir", "/tmp", "--clearenv"]  # (out/ belongs to the job uid: bwrap itself may not enter it)
    for key, value in {**_environment(), **mounts.environment()}.items():
        cmd += ["--setenv", key, value]
    cmd.append("--")
    if uid is not None:
        drop = ["--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--no-new-privs"]
        cmd += ["/usr/bin/setpriv", *drop, "--bounding-set=-all", "--inh-caps=-all", "--"]
    return [*cmd, *argv]


def _environment() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(CODE_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "XDG_CACHE_HOME": "/tmp/cache",
    }
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    return env


def prepare_folders(mounts: Mounts, uid: int | None) -> None:
    """The job's writable folders, owned by the job's uid and closed to everyone else."""
    for folder in mounts.writable():
        folder.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            for path in (folder, *folder.rglob("*")):  # restored checkpoints were written by the parent
                os.lchown(path, uid, uid)
        folder.chmod(0o700)


def limits_hook(limits: SandboxLimits, uid: int | None) -> Callable[[], None]:
    """Runs in the forked child before bwrap starts: resource limits it and everything inside inherit."""

    def apply() -> None:
        disk = limits.disk_mb * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # per real uid: exact for a per-job uid; with the worker's own uid its processes count too
        running = 0 if uid is not None else _tasks_of(os.getuid())
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes + running, limits.processes + running))

    return apply


def _tasks_of(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count


@dataclass(frozen=True)
class Launch:
    """How the supervisor starts one child: the command, its environment and what runs before exec."""

    argv: list[str]
    env: dict[str, str]
    preexec: Callable[[], None] | None = None


def launch(mounts: Mounts, argv: list[str], limits: SandboxLimits, enabled: bool) -> Launch:
    if not enabled:
        # SQUEEZE_SANDBOX=off: the operator chose no isolation; the child still gets a minimal environment
        prepare_folders(mounts, None)
        code = str(Path(workers.__file__).resolve().parent.parent)
        return Launch(argv, {**_environment(), **mounts.environment(), "PYTHONPATH": code})
    uid = _job_uid(limits, mounts.host)
    prepare_folders(mounts, uid)
    for host in mounts.inputs.values():
        _readable(host)
    return Launch(bwrap_command(mounts, argv, limits, uid), {}, limits_hook(limits, uid))


def _readable(path: Path) -> None:
    """The job's uid reads its inputs through their bind, which needs the file's read bit for others:
    blobs are private by their folder (0700), not by their mode."""
    mode = path.stat().st_mode
    if mode & 0o444 != 0o444 and os.geteuid() == path.stat().st_uid:
        path.chmod(mode | 0o444)


LAYERS = (
    "user: unprivileged uid, no capabilities (user namespace)",
    "network: none (network namespace)",
    "filesystem: empty root, read-only system and code, the job's own files only (mount namespace)",
    "processes: own pid, ipc and uts namespaces",
    "environment: minimal, no secrets",
    "limits: memory, time, processes, file size, disk (tmpfs /tmp, quota on out/)",
)


@lru_cache
def probe(mode: str) -> Isolation:
    """What isolation this worker gives its jobs. `mode` is SQUEEZE_SANDBOX: `bwrap` (the default) must
    work or SandboxUnavailable says why; `off` is the operator's explicit choice."""
    if mode == "off":
        return Isolation(mode="off", layers=[])
    if mode != "bwrap":
        raise SandboxUnavailable(f"SQUEEZE_SANDBOX={mode!r}: use bwrap (the default) or off")
    if not _bwrap():
        raise SandboxUnavailable(
            "bwrap not found: apt-get install bubblewrap (or start the worker with SQUEEZE_SANDBOX=off to run "
            "untrusted models without isolation)"
        )
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"squeeze-probe-{os.getpid()}"
    mounts = Mounts(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text("{}")
    try:
        spec = launch(mounts, [sys.executable, "-c", "import os; print(os.getuid())"], SandboxLimits(), True)
        out = subprocess.run(
            spec.argv, capture_output=True, text=True, timeout=60, env=spec.env, preexec_fn=spec.preexec
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxUnavailable(f"bwrap could not start a sandbox here: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if out.returncode != 0 or out.stdout.strip() not in (str(NOBODY), str(_job_uid(SandboxLimits(), work))):
        raise SandboxUnavailable(
            f"bwrap could not start a sandbox here (exit {out.returncode}): {out.stderr.strip()[-500:]}; in a "
            "container the worker needs user namespaces (see README, Isolation), or SQUEEZE_SANDBOX=off"
        )
    own = _job_uid(SandboxLimits(), work) is not None
    user = (
        "user: a uid of the job's own (not root), no capabilities, no_new_privs"
        if own
        else "user: uid 65534 in a user namespace (the worker's non-root uid outside), no capabilities"
    )
    return Isolation(mode="bwrap", layers=[user, *LAYERS[1:]])
