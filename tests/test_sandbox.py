"""The sandbox runs honest programs and contains hostile ones (loops, fork bombs, rm -rf,
huge allocations, early exits, faked success, floods of output, network access)."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from experiments import sandbox
from experiments.sandbox import run_program


def _separate_uid() -> bool:
    return bool(sandbox.isolation()["separate_uid"])


def _sandbox_processes() -> list[str]:
    """Live (non-zombie) processes owned by a sandbox uid."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        if uid >= sandbox.UID_BASE and not fields["State"].strip().startswith("Z"):
            found.append(pid)
    return found


def test_correct_program_passes_and_wrong_one_fails():
    ok = run_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('hi')\n")
    assert ok.passed and ok.status == "passed" and ok.returncode == 0
    assert ok.stdout_tail == "hi\n"
    wrong = run_program("def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n")
    assert not wrong.passed and wrong.status == "failed"
    assert "AssertionError" in wrong.stderr_tail
    broken = run_program("def add(a, b)\n    return a + b\n")
    assert broken.status == "failed" and "SyntaxError" in broken.stderr_tail


def test_module_name_is_the_programs_dunder_name():
    """__name__ is "__main__" by default; the paper rules use "builtins" (as exec({}))."""
    source = "print(__name__)\nclass C:\n    pass\nprint(C.__module__)\n"
    assert run_program(source).stdout_tail == "__main__\n__main__\n"
    assert run_program(source, module_name="builtins").stdout_tail == "builtins\nbuiltins\n"
    with pytest.raises(ValueError, match="identifier"):
        run_program("pass\n", module_name="x; import os")


def test_environment_is_a_fresh_private_directory_with_closed_stdin():
    source = (
        "import os, sys\n"
        "assert sys.stdin.read() == ''\n"
        "assert os.environ['HOME'] == os.getcwd() == os.environ['TMPDIR']\n"
        "open('scratch.txt', 'w').write('x')\n"
        "print(os.getcwd()); print(os.getuid())\n"
    )
    result = run_program(source)
    assert result.passed, result.stderr_tail
    cwd, uid = result.stdout_tail.split()
    assert Path(cwd).name.startswith("hmoe-sandbox-")
    assert not Path(cwd).exists(), "the temporary directory must be deleted afterwards"
    if _separate_uid():
        assert int(uid) >= sandbox.UID_BASE


@pytest.mark.parametrize(
    "early_exit",
    ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit", "exit()"],
)
def test_exiting_before_the_asserts_does_not_pass(early_exit):
    result = run_program(f"def f():\n    return 1\n{early_exit}\nassert f() == 2\n")
    assert result.returncode == 0  # the process did exit with status 0...
    assert not result.passed and result.status == "failed"  # ...but never reached the end


def test_faked_success_signals_do_not_pass():
    source = (
        "import os, sys\n"
        "for text in ('passed', 'OK', 'done'):\n"
        "    print(text); print(text, file=sys.stderr)\n"
        "for fd in range(3, 1024):\n"
        "    for text in (b'OK\\n', b'done\\n', b' done\\n'):\n"
        "        try:\n"
        "            os.write(fd, text)\n"
        "        except OSError:\n"
        "            pass\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
        "assert False\n"
    )
    result = run_program(source)
    assert not result.passed and result.status == "failed"


def test_infinite_loop_times_out_and_the_harness_goes_on():
    result = run_program("while True:\n    pass\n", timeout_s=2)
    assert result.status == "timeout" and not result.passed
    assert run_program("assert True\n").passed


def test_fork_bomb_is_contained():
    bomb = (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            os.setsid()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_program(bomb, timeout_s=3)
    assert not result.passed and result.status in ("timeout", "killed")
    if _separate_uid():
        assert _sandbox_processes() == [], "every process of the sandbox uid must be gone"
    assert run_program("assert 1 + 1 == 2\n").passed


def test_huge_allocation_is_refused():
    result = run_program("x = bytearray(100 * 2**30)\nassert len(x) > 0\n", timeout_s=5)
    assert not result.passed and result.status in ("failed", "killed")
    assert run_program("assert True\n").passed


def test_output_flood_is_capped():
    result = run_program(
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
        timeout_s=5,
        max_output_bytes=1_000_000,
    )
    assert result.status == "killed" and not result.passed
    assert 0 < len(result.stdout_tail) <= sandbox.TAIL_BYTES


@pytest.mark.skipif(
    os.geteuid() != 0, reason="filesystem isolation needs root (the run switches to its own uid)"
)
def test_cannot_delete_or_write_outside_its_directory():
    assert _separate_uid(), sandbox.isolation()
    outside = Path(tempfile.mkdtemp(prefix="hmoe-canary-"))
    outside.chmod(0o755)
    canary = outside / "canary.txt"
    canary.write_text("keep")
    canary.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    home_canary = Path.home() / f".hmoe-canary-{uuid.uuid4().hex}"
    home_canary.write_text("keep")
    leak = Path(tempfile.gettempdir()) / f"hmoe-leak-{uuid.uuid4().hex}"
    try:
        source = (
            "import os\n"
            f"os.system('rm -rf ~ {outside} {home_canary} 2>/dev/null')\n"
            f"for path in ({str(canary)!r}, {str(home_canary)!r}, {str(outside / 'new')!r}):\n"
            "    try:\n"
            "        open(path, 'w').write('gone')\n"
            "    except OSError:\n"
            "        pass\n"
            f"open({str(leak)!r}, 'w').write('left behind')\n"
        )
        result = run_program(source)
        assert result.passed, result.stderr_tail
        assert canary.read_text() == "keep"
        assert home_canary.read_text() == "keep"
        assert not (outside / "new").exists()
        assert not leak.exists(), "files the program left in /tmp are removed"
    finally:
        home_canary.unlink(missing_ok=True)
        canary.unlink(missing_ok=True)
        outside.rmdir()


def test_no_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        direct = run_program(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
            timeout_s=5,
        )
        assert direct.status == "failed", direct
        if sandbox.isolation()["network_namespace"]:
            child = run_program(
                "import subprocess, sys\n"
                "code = \"import socket; socket.create_connection(('127.0.0.1', "
                f'{port}), timeout=2)"\n'
                "assert subprocess.run([sys.executable, '-c', code]).returncode == 0\n",
                timeout_s=5,
            )
            assert child.status == "failed", child
