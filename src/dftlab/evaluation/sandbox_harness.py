"""What runs inside a sandbox process (`sandbox.run` starts it as `python -I -c <this file>`):
read the job from stdin, lock the process down, run the program, report.

Standalone on purpose (the standard library only, no `dftlab` import): it runs with `-I`, in a
fresh interpreter, as the unprivileged user, before any model-written code.

Order matters: everything that needs privileges or `ctypes` happens first (working directory,
resource limits, Landlock, dropping to the unprivileged user), the in-process guard last, just
before the program is compiled. A program passes only when it runs to its end: then, and only
then, the harness writes the job's nonce as the last line of stdout and exits 0. `sys.exit(0)`,
`os._exit(0)`, an exception, a signal or a limit all leave the nonce unwritten.

The nonce is a defence against programs that stop early, not against code written to read the
harness's own memory: the program shares this interpreter.

Exit codes: 0 ran to its end (with the nonce), 1 raised (the last stderr line names the
exception), 3 did not compile, 128 + n killed by signal n (as a namespace's first process, where
the kernel would not kill it: see `_supervise`).
"""

from __future__ import annotations

import builtins
import json
import os
import resource
import signal
import sys
import traceback

FAILED, SYNTAX_ERROR = 1, 3
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# events that change paths: (positions of the paths, positions of the directory fds they are relative to)
_PATH_EVENTS = {
    "os.remove": ((0,), (1,)),
    "os.rmdir": ((0,), (1,)),
    "os.mkdir": ((0,), (2,)),
    "os.rename": ((0, 1), (2, 3)),
    "os.link": ((0, 1), (2, 3)),
    "os.symlink": ((1,), (2,)),
    "os.chmod": ((0,), (2,)),
    "os.chown": ((0,), (3,)),
    "os.utime": ((0,), (3,)),
    "os.truncate": ((0,), ()),
    "os.chflags": ((0,), ()),
    "os.lchflags": ((0,), ()),
    "os.setxattr": ((0,), ()),
    "os.removexattr": ((0,), ()),
    "shutil.rmtree": ((0,), (1,)),
    "shutil.chown": ((0,), ()),
}
_REFUSED_PREFIXES = ("socket.", "ctypes.")  # no network; no way around this guard through C calls
_REFUSED = {
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "subprocess.Popen",
    "os.killpg",
    "pty.spawn",
    "os.startfile",
    "webbrowser.open",
}


def _limit(kind: int, value: int) -> None:
    resource.setrlimit(kind, (value, value))


def _set_limits(limits: dict) -> None:
    _limit(resource.RLIMIT_AS, limits["memory_bytes"])
    # SIGXCPU at the soft limit, SIGKILL one second later if it is caught
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    _limit(resource.RLIMIT_FSIZE, limits["file_bytes"])  # stdout and stderr are files: SIGXFSZ past it
    _limit(resource.RLIMIT_NPROC, limits["processes"])
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NOFILE, limits["open_files"])


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError(f"could not become uid {uid}")


# Landlock (Linux >= 5.13): a kernel rule set the process cannot leave, inherited by its children.
# Writes of every kind are confined beneath the working directory (and /dev/null), TCP is denied
# (ABI >= 4) and signals to processes outside the sandbox are refused (ABI >= 6).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_PR_SET_NO_NEW_PRIVS = 38
_FS_WRITE = {1: 0b1_1111_1111_0010, 2: 1 << 13, 3: 1 << 14}  # per ABI: write/remove/make_*, refer, truncate
_FS_WRITE_FILE, _FS_TRUNCATE = 1 << 1, 1 << 14


def _landlock() -> int:
    """Restrict this process; returns the ABI used (0: Landlock is not available)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    fs = sum(bits for level, bits in _FS_WRITE.items() if abi >= level)
    attr = RulesetAttr(fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)  # bind+connect TCP; unix+signal
    size = ctypes.sizeof(ctypes.c_uint64) * (3 if abi >= 6 else 2 if abi >= 4 else 1)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for path, allowed in ((".", fs), (os.devnull, fs & (_FS_WRITE_FILE | _FS_TRUNCATE))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = PathBeneath(allowed, fd)
                if libc.syscall(_SYS_ADD_RULE, ruleset, 1, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _inside(path, root: str, dir_fd=None) -> bool:
    """Whether `path` (relative to `dir_fd` when one is given; an int: an open file) lies beneath `root`."""
    if isinstance(path, int):
        path = _fd_path(path)
    path = os.fsdecode(path)
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
        path = os.path.join(_fd_path(dir_fd), path)
    resolved = os.path.realpath(path)
    return resolved == os.devnull or resolved == root or resolved.startswith(root + os.sep)


def _other_process(path, own: set[str]) -> bool:
    """A path into another process's /proc entry (its environment, memory, command line)."""
    parts = os.path.realpath(os.fsdecode(path)).split(os.sep)
    return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] not in own


def _guard(root: str):
    """An audit hook (PEP 578) that refuses, inside this interpreter, what the OS layers may not
    cover on every platform: writing outside `root`, network sockets, starting other programs,
    signalling other processes, reading other processes' /proc entries, and ctypes."""

    def refuse(what: str):
        raise PermissionError(f"sandbox: {what} is refused")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):  # a file already open
                return
            if flags & _WRITE_FLAGS:
                # os.open (mode None) may be relative to a directory fd the event does not show
                if mode is None and not os.path.isabs(os.fsdecode(path)):
                    refuse(f"writing {path!r} through os.open with a relative path")
                if not _inside(path, root):
                    refuse(f"writing {path!r} outside the working directory")
            if _other_process(path, {str(os.getpid()), "self", "thread-self"}):
                refuse(f"opening {path!r} (another process's)")
        elif event in _PATH_EVENTS:
            paths, dir_fds = _PATH_EVENTS[event]
            for n, i in enumerate(paths):
                dir_fd = args[dir_fds[min(n, len(dir_fds) - 1)]] if dir_fds else None
                if isinstance(args[i], (str, bytes, os.PathLike, int)) and not _inside(args[i], root, dir_fd):
                    refuse(f"{event} on {args[i]!r} outside the working directory")
        elif event == "os.kill":
            if args[0] != os.getpid():
                refuse("signalling another process")
        elif event in _REFUSED or event.startswith(_REFUSED_PREFIXES):
            if event.startswith("ctypes."):
                raise ImportError(f"sandbox: {event} is refused")
            refuse(event)

    return hook


def _supervise() -> None:
    """As the first process of a PID namespace the kernel shields this process from its own
    signals (SIGXCPU, SIGXFSZ) and every orphan is re-parented to it: so it forks the program's
    process, reaps everything, and exits with the program's status (when it exits, the kernel
    kills whatever is left in the namespace)."""
    child = os.fork()
    if child == 0:
        return
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(job["cwd"])
    _set_limits(job["limits"])
    if job["uid"] is not None:
        _drop_privileges(job["uid"], job["gid"])
    if job["landlock"] and not _landlock():
        raise RuntimeError("Landlock was requested and is not available")
    if os.getpid() == 1:
        _supervise()
    nonce, program, guard = job.pop("nonce").encode(), job.pop("program"), job["guard"]
    del job
    for name in ("setsid", "setpgid", "setpgrp"):  # keep every process in the group that is killed at the end
        for module in (os, sys.modules["posix"]):
            module.__dict__.pop(name, None)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: writing past the limit kills, not raises
    if guard:
        sys.addaudithook(_guard(os.path.realpath(".")))
    try:
        code = compile(program, "<program>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        sys.stderr.write(f"{type(err).__name__}: {err}\n")
        sys.stderr.flush()
        os._exit(SYNTAX_ERROR)
    del program
    out = sys.stdout
    try:
        exec(code, {"__name__": "__program__", "__builtins__": builtins})  # noqa: S102  (what the sandbox is for)
        out.flush()
        os.write(1, b"\n" + nonce + b"\n")
    except BaseException as err:  # noqa: BLE001  (SystemExit and KeyboardInterrupt fail too)
        try:
            traceback.print_exc(limit=-3, file=sys.__stderr__)
            sys.__stderr__.write(f"{type(err).__name__}: {str(err)[:300]}\n")
            sys.__stderr__.flush()
        except BaseException:  # noqa: BLE001, S110  (stderr closed or full: the exit code says enough)
            pass
        os._exit(FAILED)
    os._exit(0)  # no atexit handlers, no waiting for the program's threads


if __name__ == "__main__":
    main()
