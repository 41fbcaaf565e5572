"""The sandbox against hostile programs. Each attack is bounded (a few hundred processes, 3 GB, a file and a
listener this test owns), so a broken sandbox fails the test without harming the machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from lmadapt.errors import LmadaptError
from lmadapt.eval.sandbox import Limits, Sandbox

LIMITS = Limits(timeout_s=20, cpu_s=2, memory_bytes=256 << 20, processes=16, output_bytes=1 << 16)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS)


def needs(sandbox: Sandbox, *features: str) -> None:
    missing = [name for name in features if not sandbox.isolation[name]]
    if missing:
        pytest.skip(f"this machine lacks {', '.join(missing)}: {sandbox.isolation['notes']}")


def run(sandbox: Sandbox, source: str):
    return sandbox.run(textwrap.dedent(source))


def test_a_program_runs_in_an_empty_directory_with_a_scrubbed_environment(
    sandbox: Sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("LMADAPT_SANDBOX_TEST", "inherited?")
    result = run(
        sandbox,
        """
        import os, sys
        print(sorted(os.listdir(".")), sorted(os.environ))
        open("scratch.txt", "w").write("the program's own file")
        print("to stderr", file=sys.stderr)
        raise SystemExit(3)
        """,
    )
    assert result.status == "failed" and result.returncode == 3 and not result.passed
    assert result.stdout == "['program.py'] ['HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR']\n"
    assert result.stderr == "to stderr\n"


def test_the_working_directory_is_removed(sandbox: Sandbox) -> None:
    result = run(sandbox, "import os; os.makedirs('a/b'); os.chmod('a', 0); print(os.getcwd())")
    assert result.passed
    assert not Path(result.stdout.strip()).exists()


def test_an_infinite_loop_ends_at_the_cpu_limit(sandbox: Sandbox) -> None:
    result = run(sandbox, "while True: pass")
    assert result.status == "signal" and result.returncode == 128 + signal.SIGXCPU
    assert result.seconds < LIMITS.timeout_s


def test_a_sleeper_ends_at_the_wall_clock_timeout() -> None:
    start = time.monotonic()
    result = Sandbox(Limits(timeout_s=1)).run("import time; time.sleep(60)")
    assert result.status == "timeout"
    assert 1 <= time.monotonic() - start < 10


def _comm_pids(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_fork_bomb_is_bounded_and_leaves_nothing_behind(sandbox: Sandbox) -> None:
    needs(sandbox, "namespaces")
    name = f"bomb{uuid.uuid4().hex[:8]}"  # each child renames itself, so survivors can be found
    source = f"""
        import ctypes, os, time
        libc = ctypes.CDLL(None)
        forked = 0
        try:
            for _ in range(300):
                if os.fork() == 0:
                    libc.prctl(15, b"{name}")  # PR_SET_NAME
                    time.sleep(30)
                    os._exit(0)
                forked += 1
        finally:
            print(forked)
        """
    try:
        result = run(sandbox, source)
        assert result.status == "failed" and "BlockingIOError" in result.stderr
        assert int(result.stdout) < LIMITS.processes
        deadline = time.monotonic() + 2
        while _comm_pids(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _comm_pids(name) == []  # the namespace's processes died with it
    finally:
        for pid in _comm_pids(name):
            os.kill(pid, signal.SIGKILL)


def test_a_memory_bomb_hits_the_address_space_limit(sandbox: Sandbox) -> None:
    result = run(
        sandbox,
        """
        held = []
        for _ in range(48):  # 3 GB at most, touched
            held.append(b"x" * (64 << 20))
        """,
    )
    assert result.status == "failed" and "MemoryError" in result.stderr


def test_huge_output_is_capped_and_the_program_killed(sandbox: Sandbox) -> None:
    result = run(sandbox, "while True: print('spam' * 1000)")
    assert result.status == "output_limit"
    assert len(result.stdout) == LIMITS.output_bytes
    assert result.seconds < LIMITS.timeout_s


def test_files_outside_the_working_directory_are_untouched(sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me", encoding="utf-8")
    for attack in (
        f"open({str(target)!r}, 'w').write('overwritten')",
        f"open({str(target)!r}, 'a').write('appended')",
        f"import os; os.remove({str(target)!r})",
        f"import os; os.rename({str(target)!r}, {str(tmp_path / 'moved')!r})",
        f"open({str(tmp_path / 'planted.txt')!r}, 'w').write('new')",
        "open('/tmp/lmadapt-sandbox-planted', 'w').write('new')",
    ):
        result = run(sandbox, attack)
        assert result.status == "failed" and "Error" in result.stderr, attack
    assert target.read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
    assert not Path("/tmp/lmadapt-sandbox-planted").exists()


def test_the_evaluators_environment_secrets_stay_hidden(sandbox: Sandbox, monkeypatch) -> None:
    secret = uuid.uuid4().hex
    monkeypatch.setenv("LMADAPT_TEST_SECRET", secret)
    result = run(
        sandbox,
        f"""
        import os
        found = os.environ.get("LMADAPT_TEST_SECRET")
        if found is None:  # the evaluator's own environment, through /proc
            found = open("/proc/{os.getpid()}/environ").read()
        print(found)
        """,
    )
    assert not result.passed
    assert secret not in result.stdout + result.stderr


def test_no_connection_reaches_a_loopback_listener(sandbox: Sandbox) -> None:
    accepted = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    accepted.append(server.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            port = server.getsockname()[1]
            result = run(
                sandbox, f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
            )
        finally:
            stop.set()
            thread.join()
    assert result.status == "failed" and "Error" in result.stderr
    assert accepted == []


_EVALUATOR = """
import os, sys
from lmadapt.eval.sandbox import Sandbox
program = (
    "import os, signal\\n"
    "os.kill(os.getppid(), signal.SIGKILL)\\n"
    f"os.kill({os.getpid()}, signal.SIGKILL)\\n"
)
print(Sandbox().run(program).status)
"""


def test_a_program_cannot_kill_its_evaluator(tmp_path: Path) -> None:
    # The evaluator is a process of its own: a broken sandbox fails this test instead of killing pytest.
    src = str(Path(__file__).resolve().parents[2] / "src")
    evaluator = subprocess.run(
        [sys.executable, "-c", _EVALUATOR],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": src},
        check=False,
    )
    assert evaluator.returncode == 0, evaluator.stderr
    assert evaluator.stdout.strip() in {"failed", "signal"}


def test_isolation_is_recorded(sandbox: Sandbox) -> None:
    isolation = sandbox.isolation
    assert set(isolation) == {"namespaces", "unshare", "landlock", "user", "python", "notes"}
    assert isolation["notes"] == [] or not (isolation["namespaces"] and isolation["landlock"])


def test_a_sandbox_that_cannot_run_programs_says_so(monkeypatch) -> None:
    from lmadapt.eval import sandbox as sandbox_module

    broken = {**sandbox_module._probe_isolation(), "python": "/nonexistent/python"}
    monkeypatch.setattr(sandbox_module, "_probe_isolation", lambda: broken)
    with pytest.raises(LmadaptError, match="the code sandbox cannot run a trivial program"):
        Sandbox().run("pass")
