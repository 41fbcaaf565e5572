"""Run untrusted programs (model-written code) each in its own confined process, and say how each ended.

`Sandbox.run(source)` writes the Python program into a fresh empty temporary directory and starts it
there, through `eval.sandbox_launch`, with:

- a new user, network, PID and mount namespace (`unshare`): no network interface but a downed loopback,
  so nothing can be connected to, not even this machine's own listeners; the launcher is PID 1 of a new
  PID namespace, so when the program ends every process it started ends with it; the process limit counts only
  the sandbox's processes (outside a user namespace RLIMIT_NPROC counts every process of the user, and
  does not apply to root at all); its files live on a size-limited tmpfs over the working directory;
- as user nobody when the evaluator is root (root is exempt from the process limit, and may write and
  signal anything), with a system Python that nobody may run when the evaluator's is closed to it;
- Landlock where the kernel has it: no writing, creating or removing files outside the working directory,
  no TCP connections, no signals to processes outside;
- limits on CPU seconds, address space, file size, open files and processes;
- a wall-clock timeout after which the whole process tree is killed;
- a scrubbed environment: PATH, HOME and TMPDIR (the working directory), a UTF-8 locale;
- stdout and stderr captured up to a byte cap; a program that writes more is killed.

The directory is removed afterwards. What the machine does not allow is skipped and recorded in
`Sandbox.isolation` (e.g. no user namespaces: no network or PID isolation), which evaluations store in
metrics.json. This contains programs that misbehave; it is not a security boundary against a determined
attacker (README: "Code execution").
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmadapt.errors import LmadaptError
from lmadapt.eval import sandbox_launch

_LAUNCHER = Path(sandbox_launch.__file__).resolve()
_NAMESPACES = ["--user", "--map-root-user", "--net", "--pid", "--mount", "--fork", "--kill-child"]
_READ_CHUNK = 1 << 16
_GRACE_SECONDS = 5.0  # after the kill, for the pipes to close
_NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # address space
    file_bytes: int = 16 << 20  # largest file written
    disk_bytes: int = 64 << 20  # all files written (tmpfs size)
    open_files: int = 64
    processes: int = 16  # in the sandbox's user namespace
    output_bytes: int = 1 << 20  # stdout and stderr each

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_CPU": self.cpu_s,
            "RLIMIT_AS": self.memory_bytes,
            "RLIMIT_FSIZE": self.file_bytes,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_CORE": 0,
        }


@dataclass
class Execution:
    """How one program ended. `status`: passed (exit 0), failed (another exit code), signal (killed by
    a signal, e.g. SIGXCPU at the CPU limit), timeout, output_limit, or setup_failed (the sandbox could
    not be set up; the program did not run)."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class Sandbox:
    limits: Limits = field(default_factory=Limits)

    @functools.cached_property
    def isolation(self) -> dict[str, Any]:
        """What confinement this machine allows: {"namespaces": bool, "landlock": ABI or 0, "user": uid
        programs run as (None: the evaluator's), "python", "notes": [why something is missing]}. Probed on
        first use, ending with a trial program: a sandbox that cannot run `pass` is an LmadaptError rather
        than every program scored as failing."""
        isolation = _probe_isolation()
        trial = self._run(isolation, "pass")
        if not trial.passed:
            raise LmadaptError(
                f"the code sandbox cannot run a trivial program ({trial.status}): {trial.stderr}"
            )
        return isolation

    def run(self, source: str) -> Execution:
        """Run the Python program `source` confined as the module docstring says."""
        return self._run(self.isolation, source)

    def _run(self, isolation: dict[str, Any], source: str) -> Execution:
        workdir = tempfile.mkdtemp(prefix="lmadapt-sandbox-")
        try:
            program = Path(workdir, sandbox_launch.PROGRAM)
            program.write_text(source, encoding="utf-8")
            if isolation["user"] is not None:
                for path in (workdir, program):
                    os.chown(path, isolation["user"], isolation["user"])
            settings = {
                "workdir": workdir,
                "limits": self.limits.rlimits(),
                "landlock": bool(isolation["landlock"]),
                "tmpfs_bytes": self.limits.disk_bytes if isolation["namespaces"] else 0,
            }
            command = [isolation["python"], "-I", "-B", "-c", _launcher_source(), json.dumps(settings)]
            if isolation["namespaces"]:
                command = [isolation["unshare"], *_NAMESPACES, "--", *command]
            return _execute(command, workdir, self.limits, isolation["user"])
        finally:
            _remove_tree(workdir)


def _environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


@functools.cache
def _launcher_source() -> str:
    # Passed as text: the launcher's file may lie where the sandbox's user cannot read.
    return _LAUNCHER.read_text(encoding="utf-8")


def _execute(command: list[str], workdir: str, limits: Limits, user: int | None) -> Execution:
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=_environment(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **_as_user(user),
    )
    outputs = {process.stdout: bytearray(), process.stderr: bytearray()}
    ended_by = _collect(process, outputs, start + limits.timeout_s, limits.output_bytes)
    _kill_group(process)  # also what a finished program left running (outside a PID namespace)
    process.wait()
    stdout, stderr = (
        bytes(out[: limits.output_bytes]).decode("utf-8", "replace") for out in outputs.values()
    )
    code = process.returncode
    if ended_by is not None:
        status = ended_by
    elif code == sandbox_launch.SETUP_FAILED and stderr.startswith("sandbox setup failed"):
        status = "setup_failed"
    else:
        status = "passed" if code == 0 else "signal" if code < 0 or code > 128 else "failed"
    return Execution(status, code, stdout, stderr, time.monotonic() - start)


def _collect(
    process: subprocess.Popen, outputs: dict[Any, bytearray], deadline: float, cap: int
) -> str | None:
    """Read both pipes until they close; returns "timeout" or "output_limit" when the program was killed
    for it (the whole tree, at once), else None."""
    ended_by = None
    with selectors.DefaultSelector() as selector:
        for pipe in outputs:
            selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                if ended_by is not None:  # killed, yet something still holds the pipes open
                    break
                ended_by = "timeout"
                _kill_group(process)
                deadline = time.monotonic() + _GRACE_SECONDS
                continue
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = outputs[key.fileobj]
                buffer += chunk
                if len(buffer) > cap and ended_by is None:
                    ended_by = "output_limit"
                    _kill_group(process)
                    deadline = time.monotonic() + _GRACE_SECONDS
                if len(buffer) > cap:
                    del buffer[cap + 1 :]
    for pipe in outputs:
        pipe.close()
    return ended_by


def _kill_group(process: subprocess.Popen) -> None:
    # The session started with the program; in a PID namespace, `unshare --kill-child` takes the
    # namespace's init, and the kernel every process in it, down with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _remove_tree(path: str) -> None:
    """Remove the working directory, even where the program took away its own permissions."""
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _probe_isolation() -> dict[str, Any]:
    notes = []
    user = None
    if os.getuid() == 0:
        # Root is exempt from RLIMIT_NPROC, even in a user namespace it made, and may write anywhere.
        user = _NOBODY
    python = next((p for p in _interpreters() if _runs([p, "-I", "-c", "pass"], user)), None)
    if python is None and user is not None:
        notes.append("no Python that user nobody may run: programs run as root")
        user, python = None, sys.executable
    unshare = shutil.which("unshare")
    namespaces = False
    if unshare is None:
        notes.append("no `unshare` program: no network, PID or mount namespace")
    else:
        namespaces = _runs([unshare, *_NAMESPACES, "--", "true"], user)
        if not namespaces:
            notes.append("no user namespaces: network open, no PID or mount namespace")
    if not namespaces:
        notes.append(
            "the process limit counts every process of the user"
            + (" (root: none)" if user is None and os.getuid() == 0 else "")
        )
    try:
        landlock = sandbox_launch.landlock_abi()
    except OSError as err:
        landlock = 0
        notes.append(f"no Landlock ({err.strerror}): files outside the working directory are writable")
    return {
        "namespaces": namespaces,
        "unshare": unshare,
        "landlock": landlock,
        "user": user,
        "python": python,
        "notes": notes,
    }


def _interpreters() -> list[str]:
    """sys.executable, then the system's Python (a virtual environment under /root is closed to nobody)."""
    found = [sys.executable, *(shutil.which(name, path="/usr/bin:/bin") for name in ("python3",))]
    return [path for path in dict.fromkeys(found) if path]


def _runs(command: list[str], user: int | None) -> bool:
    try:
        return (
            subprocess.run(command, capture_output=True, timeout=30, check=False, **_as_user(user)).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _as_user(user: int | None) -> dict[str, Any]:
    return {} if user is None else {"user": user, "group": user, "extra_groups": []}
