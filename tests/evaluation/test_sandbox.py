"""The sandbox: a program's output and verdict; hostile programs fail and harm nothing, with every
layer on, with the in-process guard alone, and run by an unprivileged user."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dftlab.evaluation import sandbox
from dftlab.evaluation.sandbox import Limits, isolation, run, run_many
from tests.evaluation.sandbox_cases import programs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")
SECRET = "DFTLAB_SANDBOX_TEST_SECRET"
SECRET_VALUE = "s3cret-value-4242"
LIMITS = Limits(timeout_s=2)
ROOT = os.getuid() == 0


@pytest.fixture
def world():
    """What the hostile programs aim at: a world-writable folder outside the sandbox (as /tmp is),
    a listening socket, a secret in the evaluator's environment."""
    outside = Path(tempfile.mkdtemp(prefix="dftlab-outside-"))
    os.chmod(outside, 0o777)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    os.environ[SECRET] = SECRET_VALUE
    try:
        yield outside, listener
    finally:
        del os.environ[SECRET]
        listener.close()
        shutil.rmtree(outside)


def _nothing_escaped(outside: Path, listener: socket.socket, results: dict) -> None:
    assert list(outside.iterdir()) == []
    assert not list(Path("/tmp").glob("dftlab-sandbox-escape-*"))
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    for name, r in results.items():
        assert SECRET_VALUE not in r["stdout"] + r["stderr"], name


def _processes_of(uid: int, expect: list[str] | None = None, wait_s: float = 5.0) -> list[str]:
    """The processes of `uid`; with `expect`, polled until they are those (the kernel kills what a
    namespace held after its first process died, a moment after that)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["ps", "-u", str(uid), "-o", "pid=,comm="], check=False, capture_output=True, text=True)
        found = out.stdout.split("\n")[:-1]
        if expect is None or found == expect or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_program_passes_with_its_output():
    r = run("import math\nprint(math.comb(5, 2))\n", LIMITS)
    assert r.status == "passed" and r.returncode == 0 and r.stdout == "10\n" and r.error == ""


@pytest.mark.parametrize(
    ("program", "status", "error"),
    [
        ("assert 1 + 1 == 3\n", "failed", "AssertionError"),
        ("def f(:\n", "syntax_error", "SyntaxError"),
        ("raise KeyError('k')\n", "failed", "KeyError: 'k'"),
    ],
)
def test_a_failing_program_says_why(program, status, error):
    r = run(program, LIMITS)
    assert (r.status, r.passed) == (status, False) and r.error.startswith(error)


def test_outputs_are_truncated_and_the_environment_is_empty():
    r = run("import os\nprint(sorted(os.environ))\nprint('y' * 100_000)\n", Limits(timeout_s=4, keep_bytes=200))
    assert r.passed and len(r.stdout) == 200
    assert r.stdout.startswith(str(sorted(sandbox._ENV)))


def test_isolation_layers_here():
    iso = isolation()
    assert iso.uid == (sandbox.NOBODY if ROOT else None)
    print(iso.describe())
    if shutil.which("unshare") and ROOT:
        assert iso.namespaces  # unshare works as root on Linux


def test_hostile_programs_fail_and_harm_nothing(world):
    outside, listener = world
    cases = programs(str(outside), os.getpid(), listener.getsockname()[1], SECRET)
    before = _processes_of(sandbox.NOBODY) if ROOT else None
    started = time.monotonic()
    results = {name: run(src, LIMITS) for name, src in cases.items()}
    elapsed = time.monotonic() - started
    for name, r in results.items():
        print(f"{name}: {r.status} ({r.error}) {r.seconds:.2f}s")
    assert not [name for name, r in results.items() if r.passed]
    _nothing_escaped(outside, listener, {k: r.__dict__ for k, r in results.items()})
    assert results["infinite_loop"].status == results["fork_bomb_that_keeps_trying"].status == "timeout"
    assert results["allocate_50_gb"].error.startswith("MemoryError")
    assert results["print_1_gb"].status == "output_limit" and len(results["print_1_gb"].stdout) <= LIMITS.keep_bytes
    assert elapsed < 3 * LIMITS.timeout_s + 20  # only the two loops ran until their wall clock
    if ROOT:
        assert _processes_of(sandbox.NOBODY, before) == before  # nothing left running


def test_a_program_that_leaves_a_child_running_leaves_nothing():
    r = run("import os, time\nif os.fork() == 0:\n    time.sleep(60)\n", LIMITS)
    assert r.passed
    if ROOT:
        assert _processes_of(sandbox.NOBODY, []) == []


def test_the_guard_alone_refuses_each(world):
    """Without namespaces and Landlock (a platform that has neither) the in-process guard still
    refuses what the kernel would have: its own message names what it refused."""
    outside, listener = world
    iso = isolation(namespaces=False, landlock=False)
    cases = programs(str(outside), os.getpid(), listener.getsockname()[1], SECRET)
    results = {
        name: run(cases[name], LIMITS, iso)
        for name in (
            "write_outside",
            "write_outside_through_a_directory_fd",
            "write_to_tmp",
            "socket_to_localhost",
            "kill_the_parent",
            "kill_the_evaluator",
            "read_the_evaluators_environment",
        )
    }
    for name, r in results.items():
        assert not r.passed and "sandbox:" in r.error, (name, r.error)
    _nothing_escaped(outside, listener, {k: r.__dict__ for k, r in results.items()})


@pytest.mark.skipif(not ROOT, reason="the kernel's layers as root")
def test_the_kernel_layers_alone_refuse_each(world):
    """With the in-process guard off, the unprivileged user, the namespaces and Landlock refuse
    the same programs on their own (where this machine has them)."""
    outside, listener = world
    iso = isolation(guard=False)
    if not (iso.namespaces and iso.landlock):
        pytest.skip(f"not every kernel layer is available here: {iso.describe()}")
    cases = programs(str(outside), os.getpid(), listener.getsockname()[1], SECRET)
    results = {
        name: run(cases[name], LIMITS, iso)
        for name in (
            "write_outside",
            "write_outside_through_a_directory_fd",
            "write_to_tmp",
            "socket_to_localhost",
            "kill_the_parent",
            "kill_the_evaluator",
            "read_the_evaluators_environment",
            "fork_bomb",
        )
    }
    for name, r in results.items():
        print(f"{name}: {r.status} ({r.error})")
        assert not r.passed and "sandbox:" not in r.error, (name, r.error)
    _nothing_escaped(outside, listener, {k: r.__dict__ for k, r in results.items()})


def test_run_many_keeps_the_order_and_runs_in_parallel():
    programs_ = [f"import time\ntime.sleep(1)\nassert {i} % 3 != 0\n" for i in range(6)]
    started = time.monotonic()
    results = run_many(programs_, Limits(timeout_s=10), workers=6)
    assert [r.passed for r in results] == [i % 3 != 0 for i in range(6)]
    assert time.monotonic() - started < 6 * 1  # not one after the other (they sleep, so even on a busy machine)


_AS_NOBODY = """
import json, os, socket, sys
sys.path.insert(0, {src!r})
sys.path.insert(0, {root!r})
from dftlab.evaluation.sandbox import Limits, isolation, run
from tests.evaluation.sandbox_cases import programs
listener = socket.create_server(("127.0.0.1", {port}))
os.environ[{secret!r}] = {value!r}
out = {{}}
for layers in ("auto", "guard_only"):
    iso = isolation() if layers == "auto" else isolation(namespaces=False, landlock=False)
    cases = programs({outside!r}, os.getpid(), {port}, {secret!r})
    out[layers] = {{"describe": iso.describe(), "results": {{}}}}
    for name, src in cases.items():
        r = run(src, Limits(timeout_s=2), iso)
        out[layers]["results"][name] = {{"passed": r.passed, "status": r.status, "error": r.error,
                                        "stdout": r.stdout, "stderr": r.stderr}}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not ROOT or not shutil.which("setpriv"), reason="needs root to become an unprivileged user")
def test_as_an_unprivileged_user(world, tmp_path):
    """The evaluating process itself runs as nobody (the sandbox runs programs as the caller's own
    user then): every case fails with the layers this machine allows, and with the guard alone;
    the evaluator survives to print its report."""
    outside, listener = world
    port = listener.getsockname()[1]
    listener.close()  # the unprivileged evaluator listens on the same port itself
    python = shutil.which("python3", path="/usr/bin:/bin")
    src_dir, root = Path(sandbox.__file__).parents[2], Path(__file__).parents[2]
    script = _AS_NOBODY.format(
        src=str(src_dir), root=str(root), port=port, secret=SECRET, value=SECRET_VALUE, outside=str(outside)
    )
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            python,
            "-c",
            (
                f"import sys; sys.path[:0] = [{str(src_dir)!r}, {str(root)!r}]; "
                "import dftlab.evaluation.sandbox, tests.evaluation.sandbox_cases"
            ),
        ],
        check=False,
        capture_output=True,
        cwd="/",
    )
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot import the sandbox from {src_dir}: {probe.stderr[-200:]}")
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    for layers, part in report.items():
        print(layers, part["describe"])
        for name, r in part["results"].items():
            print(f"  {name}: {r['status']} ({r['error']})")
        assert not [name for name, r in part["results"].items() if r["passed"]], layers
        assert list(outside.iterdir()) == [] and not list(Path("/tmp").glob("dftlab-sandbox-escape-*"))
        assert not [n for n, r in part["results"].items() if SECRET_VALUE in r["stdout"] + r["stderr"]]
