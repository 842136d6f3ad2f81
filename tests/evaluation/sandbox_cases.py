"""Hostile programs for the sandbox, shared by the tests that run them as root and as an unprivileged
user. Each one must fail, and leave the evaluating process and the machine as they were.

Placeholders filled in by `programs`: {outside} a directory outside the sandbox (its files must
not appear), {pid} the evaluating process, {port} a TCP port it listens on, {secret} the name of
an environment variable it holds."""

from __future__ import annotations

CASES = {
    "infinite_loop": "while True:\n    pass\n",
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "fork_bomb_that_keeps_trying": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    ),
    "allocate_50_gb": "x = bytearray(50 * 2**30)\nx[-1] = 1\n",
    "write_outside": "open({outside!r} + '/escaped.txt', 'w').write('x')\n",
    "write_outside_through_a_directory_fd": (
        "import os\nfd = os.open({outside!r}, os.O_RDONLY)\n"
        "os.close(os.open('escaped_fd.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n"
    ),
    "write_to_tmp": "import os\nopen('/tmp/dftlab-sandbox-escape-' + str(os.getpid()), 'w').write('x')\n",
    "read_an_environment_secret": (
        "import os\nvalue = os.environ.get({secret!r})\nprint(value)\nassert value is not None\n"
    ),
    "read_the_evaluators_environment": "print(open('/proc/{pid}/environ', 'rb').read())\n",
    "socket_to_localhost": (
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'escaped')\n"
    ),
    "kill_the_parent": "import os\nos.kill(os.getppid(), 9)\nimport time\ntime.sleep(1)\nassert False\n",
    "kill_the_evaluator": "import os\nos.kill({pid}, 9)\nimport time\ntime.sleep(1)\nassert False\n",
    "print_1_gb": "for _ in range(2**20):\n    print('x' * 1023)\n",
    "exit_0_before_the_asserts": "def f():\n    return 1\nimport sys\nsys.exit(0)\nassert f() == 2\n",
    "os_exit_0_before_the_asserts": "def f():\n    return 1\nimport os\nos._exit(0)\nassert f() == 2\n",
}


def programs(outside: str, pid: int, port: int, secret: str) -> dict[str, str]:
    return {name: src.format(outside=outside, pid=pid, port=port, secret=secret) for name, src in CASES.items()}
