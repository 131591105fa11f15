"""Run one untrusted Python program (generated code + its tests) in a contained child process.

``run_program(source)`` answers one question: did the whole program run to its end and exit 0?

How a program runs
- A fresh ``python -I`` process (isolated mode: no PYTHON* variables, no user site, no cwd on
  sys.path) in its own session and process group, with a minimal environment and a fresh
  temporary directory as cwd, HOME and TMPDIR (deleted afterwards). The program text reaches
  the child on stdin, which the bootstrap then replaces by /dev/null, so the program sees a
  closed stdin and no file holding its own source.
- Resource limits set in the child before exec: address space (``memory_mb``), CPU seconds
  (wall limit + 1), file size (``MAX_FILE_BYTES``), open files, no core dumps, and at most
  ``MAX_PROCESSES`` processes/threads.
- When the harness runs as root (containers, CI here): the child switches to a uid of its
  own (``UID_BASE`` + its pid, so concurrent programs never share one; no groups) before exec.
  It then cannot write any file the harness's user owns, and RLIMIT_NPROC is enforced for it
  (the kernel does not enforce it for root). Afterwards every process of that uid is killed
  with one ``kill(-1)`` issued as that uid, so children that left the process group (setsid,
  double fork) die too, and files the uid left at the top of /tmp, /var/tmp and /dev/shm are
  removed. The interpreter used is the first of the harness's own, its base interpreter and
  /usr/bin/python3 that this uid can start (probed once per process; the harness's may sit
  under a directory only root can enter, and then the program sees the system Python's
  standard library without the project's packages).
- No network: the child gets an empty network namespace (only a down loopback) when the
  kernel allows it (root, or an unprivileged user namespace otherwise); where it does not,
  an audit hook refuses socket connect/bind/send in the Python process itself (its own
  subprocesses are then not covered). ``isolation()`` says which layers are active.
- Wall-clock timeout: the whole session (and, as root, the whole uid) is SIGKILLed.
- stdout and stderr go through pipes read by the harness with a byte cap: once
  ``max_output_bytes`` have arrived the program is killed. Only tails are kept.

When it passes
The bootstrap executes the program, and only if that returns normally (no exception, no
``sys.exit``, no ``os._exit``) writes ``<nonce> done`` to a dedicated report pipe. The nonce is
random per run and travels on stdin with the program, never in argv, the environment or a
file; the report pipe is not stdout and is closed on exec. ``passed`` requires exit status 0
and exactly that report. Printing anything, exiting early with status 0, or writing constant
text to guessed file descriptors therefore cannot pass.

What it cannot guarantee
- Code that deliberately searches the interpreter's memory for the nonce and the report fd
  can fake a pass, as can code that returns an object whose ``__eq__`` is always true: the
  tests run in the same interpreter as the code under test, which no in-process harness can
  prevent. Scores are sound for honest-but-wrong code, not against a deliberate cheater.
- Memory is limited per process (address space), not per program: the worst case is
  ``MAX_PROCESSES * memory_mb``. Disk use is limited per file, not in total (temporary files
  are deleted afterwards). There is no cgroup, seccomp filter or private mount namespace.
- The limits, the namespace and the uid switch are applied by a small preexec function
  (between fork and exec); like any preexec_fn it is meant for processes without other
  busy threads (``hmoe score`` runs it in worker processes).
- Without root there is no uid switch: the program runs as the harness's user and can write
  where that user can; RLIMIT_NPROC (which counts all of that user's tasks) is set to the
  count at start + MAX_PROCESSES, and processes that leave the session survive the timeout
  kill until their CPU limit ends them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

UID_BASE = 2_000_000_000
"""Sandbox uids are UID_BASE + the child's pid (root mode only)."""
MAX_PROCESSES = 8
"""RLIMIT_NPROC of the sandbox uid: processes and threads together."""
MAX_FILE_BYTES = 16 * 2**20
"""RLIMIT_FSIZE: the largest file the program may write."""
MAX_OPEN_FILES = 256
TAIL_BYTES = 8192
"""How much of the end of stdout and of stderr an ExecResult keeps."""
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_REPORT_LIMIT = 4096

# The child's entry point: argv = [report fd, "1" to install the network audit hook,
# the program's __name__].
_BOOTSTRAP = r"""
import os, sys
def _hmoe_sandbox(report_fd, audit, module_name):
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    nonce, _, source = b"".join(chunks).partition(b"\n")
    del chunks
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.set_inheritable(report_fd, False)
    if audit:
        blocked = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"}
        def _no_network(event, args):
            if event in blocked:
                raise PermissionError("network access is disabled in the sandbox")
        sys.addaudithook(_no_network)
    code = compile(source, "<program>", "exec")
    del source
    exec(code, {"__name__": module_name, "__builtins__": __builtins__})
    os.write(report_fd, nonce + b" done\n")
_hmoe_sandbox(int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3])
"""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program: ``status`` is passed, failed, timeout, killed or error."""

    passed: bool
    status: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    seconds: float


@dataclass(frozen=True)
class _Plan:
    interpreter: str
    separate_uid: bool
    network_namespace: bool


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _child_setup(plan: _Plan, workdir: str, memory_mb: int, cpu_s: int) -> Callable[[], None]:
    """The preexec function: limits, network namespace, then (as root) the uid switch."""
    limits = [
        (resource.RLIMIT_AS, memory_mb * 2**20),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, MAX_FILE_BYTES),
        (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
        (resource.RLIMIT_CORE, 0),
    ]
    if plan.separate_uid:
        limits.append((resource.RLIMIT_NPROC, MAX_PROCESSES))
    else:  # the limit counts every task of the harness's user: allow a few more than now
        limits.append((resource.RLIMIT_NPROC, _tasks_of(os.getuid()) + MAX_PROCESSES))
    unshare = _libc().unshare  # resolved here, not between fork and exec
    unshare_flags = 0
    if plan.network_namespace:
        unshare_flags = _CLONE_NEWNET if plan.separate_uid else _CLONE_NEWNET | _CLONE_NEWUSER

    def setup() -> None:
        for which, value in limits:
            resource.setrlimit(which, (value, value))
        if unshare_flags and unshare(unshare_flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare: {os.strerror(err)}")
        if plan.separate_uid:
            uid = UID_BASE + os.getpid()
            os.chown(workdir, uid, uid)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)

    return setup


def _kill_uid(plan: _Plan, uid: int) -> None:
    """Kill every process of ``uid``: kill(-1) sent as that uid reaches exactly those."""
    subprocess.run(
        [plan.interpreter, "-I", "-S", "-c", "import os; os.kill(-1, 9)"],
        user=uid,
        group=uid,
        extra_groups=[],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def _tasks_of(uid: int) -> int:
    """How many tasks (processes and threads) ``uid`` runs now."""
    count = 0
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                count += len(os.listdir(f"/proc/{name}/task"))
    return count


def _live_processes_of(uid: int) -> list[int]:
    """Pids owned by ``uid`` that are not zombies (a /proc scan)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def _remove_files_of(uid: int) -> None:
    """Delete what ``uid`` created at the top of the world-writable temporary directories."""
    for folder in WORLD_WRITABLE_DIRS:
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


class _Tail:
    """The last TAIL_BYTES of a stream."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * TAIL_BYTES:
            del self.data[: len(self.data) - TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.data[-TAIL_BYTES:]).decode("utf-8", errors="replace")


def _execute(
    plan: _Plan,
    source: str,
    timeout_s: float,
    memory_mb: int,
    max_output_bytes: int,
    audit: bool,
    module_name: str = "__main__",
) -> ExecResult:
    start = time.monotonic()
    nonce = secrets.token_hex(16).encode()
    payload = nonce + b"\n" + source.encode("utf-8", errors="replace")
    workdir = tempfile.mkdtemp(prefix="hmoe-sandbox-")
    os.chmod(workdir, 0o700)
    report_r, report_w = os.pipe()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    cpu_s = int(timeout_s) + 1
    proc = None
    try:
        try:
            proc = subprocess.Popen(
                [
                    plan.interpreter,
                    "-I",
                    "-c",
                    _BOOTSTRAP,
                    str(report_w),
                    "1" if audit else "0",
                    module_name,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                pass_fds=(report_w,),
                start_new_session=True,
                preexec_fn=_child_setup(plan, workdir, memory_mb, cpu_s),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return ExecResult(False, "error", None, "", f"cannot start: {exc}", 0.0)
        finally:
            os.close(report_w)
        outcome = _supervise(proc, payload, report_r, start + timeout_s, max_output_bytes)
    finally:
        os.close(report_r)
        if proc is not None:
            _kill_everything(proc, plan)
        shutil.rmtree(workdir, ignore_errors=True)
    timed_out, over_output, report, stdout, stderr = outcome
    returncode = proc.returncode
    if timed_out:
        status = "timeout"
    elif over_output or returncode is None or returncode < 0:
        status = "killed"
    elif returncode == 0 and report == nonce + b" done\n":
        status = "passed"
    else:
        status = "failed"
    return ExecResult(
        status == "passed",
        status,
        returncode,
        stdout.text(),
        stderr.text(),
        time.monotonic() - start,
    )


def _supervise(
    proc: subprocess.Popen, payload: bytes, report_r: int, deadline: float, max_output: int
) -> tuple[bool, bool, bytes, _Tail, _Tail]:
    """Feed stdin, collect output under the cap, wait for exit or the deadline."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdout, stderr, report = _Tail(), _Tail(), bytearray()
    timed_out = over_output = False
    total = 0
    os.set_blocking(proc.stdin.fileno(), False)
    streams = {proc.stdout.fileno(): stdout, proc.stderr.fileno(): stderr}
    with selectors.DefaultSelector() as sel:
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(report_r, selectors.EVENT_READ)
        sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        pending = memoryview(payload)
        exited_at: float | None = None
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = proc.poll() is None
                break
            if exited_at is not None and now - exited_at > 0.5:
                break  # the program exited; leftovers still holding the pipes get killed
            for key, _ in sel.select(min(deadline - now, 0.1)):
                fd = key.fd
                if key.events & selectors.EVENT_WRITE:
                    try:
                        pending = pending[os.write(fd, pending[: 1 << 16]) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    sel.unregister(fd)
                elif fd == report_r:
                    if len(report) < _REPORT_LIMIT:
                        report += chunk
                else:
                    streams[fd].add(chunk)
                    total += len(chunk)
            if total > max_output:
                over_output = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
    if not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is None and not (timed_out or over_output):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    proc.stdout.close()
    proc.stderr.close()
    return timed_out, over_output, bytes(report), stdout, stderr


def _kill_everything(proc: subprocess.Popen, plan: _Plan) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if plan.separate_uid:
        uid = UID_BASE + proc.pid
        for _ in range(40):  # until none is left (SIGKILL is not instantaneous); ~2 s at most
            if not _live_processes_of(uid):
                break
            _kill_uid(plan, uid)
            time.sleep(0.05)
        _remove_files_of(uid)


def _probe(plan: _Plan) -> bool:
    try:
        result = _execute(plan, "pass\n", 20.0, 512, 10_000, audit=False)
    except OSError:
        return False
    return result.passed


@functools.cache
def _plan() -> _Plan:
    """The strongest isolation this machine allows (probed once per process)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]
    interpreters = list(dict.fromkeys(c for c in candidates if c and Path(c).exists()))
    if os.geteuid() == 0:
        for netns in (True, False):
            for interpreter in interpreters:
                plan = _Plan(interpreter, separate_uid=True, network_namespace=netns)
                if _probe(plan):
                    return plan
    plan = _Plan(sys.executable, separate_uid=False, network_namespace=True)
    return plan if _probe(plan) else _Plan(sys.executable, False, False)


def isolation() -> dict[str, object]:
    """Which protection layers are active on this machine."""
    plan = _plan()
    return {
        "interpreter": plan.interpreter,
        "separate_uid": plan.separate_uid,
        "network_namespace": plan.network_namespace,
        "network_audit_hook": not plan.network_namespace,
        "max_processes": MAX_PROCESSES,
    }


def run_program(
    source: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_output_bytes: int = 1_000_000,
    module_name: str = "__main__",
) -> ExecResult:
    """Run ``source`` in the sandbox; passed = ran to its end and exited 0.

    ``module_name`` is the program's ``__name__`` ("__main__" as for a script; the paper
    rules use "builtins", what ``exec`` with empty globals gives, as the artifact did).
    """
    if not module_name.isidentifier():
        raise ValueError(f"module_name must be an identifier, got {module_name!r}")
    plan = _plan()
    return _execute(
        plan,
        source,
        timeout_s,
        memory_mb,
        max_output_bytes,
        audit=not plan.network_namespace,
        module_name=module_name,
    )
