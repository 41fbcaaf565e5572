"""The child side of `eval.sandbox`: confine this process, then run the program in it.

Run as a script by path (`python -I -B sandbox_launch.py SETTINGS_JSON`, inside the namespaces the
parent made), so it uses the standard library only and imports nothing of lmadapt. In order:

1. with a private mount namespace, a size-limited tmpfs is mounted over the working directory (the
   program's source is read first and written back), so files the program writes live in bounded memory
   and vanish with the namespace;
2. a new session, so the program's process group holds only its own processes;
3. resource limits (CPU seconds, address space, file size, open files, processes; no core files);
4. Landlock (Linux >= 5.13, unprivileged): writes, removals and new files only beneath the working
   directory (and /dev/null); from ABI 4 no TCP bind or connect; from ABI 6 no signals to and no
   abstract UNIX sockets of processes outside the sandbox. For a program that is not root outside its
   namespace, Landlock also denies ptrace access (reading /proc/PID/environ or memory) to processes
   outside the sandbox;
5. the program, as `__main__`, in a child process: this process waits for it and exits with its status
   (128 + N when signal N ended it). In a PID namespace this process is the namespace's init, which
   ignores signals sent from inside, so a program that signals its whole process group still has its
   end reported; when it exits, the kernel ends every process the program left behind.

A step that was asked for and fails ends the launch with `SETUP_FAILED`: the program never runs unconfined.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import runpy
import sys

SETUP_FAILED = 97
PROGRAM = "program.py"

_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
# Filesystem rights (linux/landlock.h). Reading and executing are left unhandled, hence allowed everywhere.
_FS_WRITE_FILE, _FS_TRUNCATE = 1 << 1, 1 << 14
_FS_WRITE_RIGHTS_ABI1 = sum(1 << bit for bit in (1, *range(4, 13)))  # write, remove, make-*
_FS_WRITE_RIGHTS = {1: _FS_WRITE_RIGHTS_ABI1, 2: _FS_WRITE_RIGHTS_ABI1 | 1 << 13}  # + refer
_FS_WRITE_RIGHTS_ABI3 = _FS_WRITE_RIGHTS[2] | _FS_TRUNCATE
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_MS_NOSUID, _MS_NODEV = 2, 4


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; OSError when Landlock is unavailable."""
    return _check(
        _libc.syscall(
            _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION
        ),
        "landlock",
    )


def _fs_write_rights(abi: int) -> int:
    rights = _FS_WRITE_RIGHTS.get(abi, _FS_WRITE_RIGHTS_ABI3)
    return rights | (_FS_IOCTL_DEV if abi >= 5 else 0)


def restrict_with_landlock(workdir: str) -> None:
    """Confine this process and its children as the module docstring says (step 4)."""
    abi = landlock_abi()
    fs = _fs_write_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=fs,
        handled_access_net=_NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
        scoped=_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0,
    )
    # An older kernel reads only the fields it knows; the struct is cut to them.
    size = ctypes.sizeof(ctypes.c_uint64) * (3 if abi >= 6 else 2 if abi >= 4 else 1)
    ruleset = _check(
        _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0),
        "landlock_create_ruleset",
    )
    null_rights = _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)
    for path, allowed in ((workdir, fs), ("/dev/null", null_rights)):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneathAttr(allowed_access=allowed, parent_fd=fd)
        _check(
            _libc.syscall(
                _SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0
            ),
            f"landlock_add_rule {path}",
        )
        os.close(fd)
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)


def mount_tmpfs(workdir: str, size_bytes: int) -> None:
    """A `size_bytes` tmpfs over `workdir` (in this process's private mount namespace), with the
    program's source carried over."""
    with open(os.path.join(workdir, PROGRAM), "rb") as f:
        source = f.read()
    options = f"size={size_bytes},mode=0700".encode()
    _check(
        _libc.mount(b"tmpfs", workdir.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options),
        f"mount tmpfs on {workdir}",
    )
    with open(os.path.join(workdir, PROGRAM), "wb") as f:
        f.write(source)


def set_limits(limits: dict[str, int]) -> None:
    """`limits`: resource name (RLIMIT_CPU, ...) -> value; CPU's hard limit is one second above its soft
    one, so the program gets SIGXCPU (which ends it) before SIGKILL."""
    for name, value in limits.items():
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))


def main(settings: dict) -> None:
    workdir = settings["workdir"]
    try:
        if settings["tmpfs_bytes"]:
            mount_tmpfs(workdir, settings["tmpfs_bytes"])
        os.chdir(workdir)
        with contextlib.suppress(PermissionError):  # already a session leader (no PID namespace)
            os.setsid()
        set_limits(settings["limits"])
        if settings["landlock"]:
            restrict_with_landlock(workdir)
    except OSError as err:
        sys.stderr.write(f"sandbox setup failed: {err}\n")
        sys.exit(SETUP_FAILED)
    child = os.fork()
    if child == 0:
        sys.argv = [PROGRAM]
        sys.path[0] = workdir
        runpy.run_path(PROGRAM, run_name="__main__")
        return
    status = os.waitpid(child, 0)[1]
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
