"""Run lskd's and fairseq's console commands fast: in forked children of one process
that has imported torch and fairseq once.

On the test machine starting ``fairseq-train`` costs about 20 s of imports before
it reads its first option; a forked child of a process that has done those
imports starts in milliseconds. A child runs the command's real entry point with
the real ``sys.argv``, its stdout and stderr sent to files, and ends the way the
interpreter would: the entry point's return value or ``SystemExit`` code, or, for
an uncaught exception, ``sys.excepthook`` (which lskd replaces for its own errors)
and status 1. Nothing else differs from running the console script.

Usage (a session fixture in the tests)::

    def test_x(fork_cli):                              # from fork_cli import fork_cli
        proc = fork_cli.run(["fairseq-train", data, ...])   # like subprocess.run(capture_output=True)
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

ENTRY_POINTS = {
    "fairseq-train": ("fairseq_cli.train", "cli_main"),
    "fairseq-preprocess": ("fairseq_cli.preprocess", "cli_main"),
    "fairseq-generate": ("fairseq_cli.generate", "cli_main"),
    "lskd-teacher-cache": ("lskd_fairseq.cli.teacher_cache", "main"),
    "lskd-distill-data": ("lskd_fairseq.distill", "main"),
}


def _child(request) -> None:
    """In the forked child: run one command and leave with its exit status."""
    code = 1
    try:
        os.chdir(request["cwd"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        module, func = ENTRY_POINTS[request["argv"][0]]
        sys.argv = [request["argv"][0]] + request["argv"][1:]
        import importlib

        try:
            ret = getattr(importlib.import_module(module), func)()
            code = ret if isinstance(ret, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - reported as the interpreter would
            sys.excepthook(*sys.exc_info())
            code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The server: import everything once, then fork one child per request line."""
    import importlib

    import lskd_fairseq.tasks  # noqa: F401  (the plugin, as --user-dir lskd_fairseq loads it)

    for module, _ in ENTRY_POINTS.values():
        importlib.import_module(module)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline = time.time() + request["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                code = "timeout"
                break
            time.sleep(0.05)
        out.write(json.dumps({"returncode": code}) + "\n")
        out.flush()


class ForkCli:
    """Client side: start the server, run commands through it."""

    def __init__(self, env: dict, workdir: str):
        self.env = env
        self.workdir = workdir
        self.proc = None
        self.n = 0

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=self.env, text=True, cwd=self.workdir)
        first = self.proc.stdout.readline()
        if first.strip() != "ready":
            raise RuntimeError(f"fork_cli server did not start: {first!r}")
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def run(self, args, check: bool = True, timeout: float = 600, cwd=None) -> SimpleNamespace:
        """Run a console command; returns ``returncode``, ``stdout``, ``stderr`` like subprocess.run."""
        args = [str(a) for a in args]
        if args[0] not in ENTRY_POINTS:
            raise ValueError(f"fork_cli knows {sorted(ENTRY_POINTS)}, not {args[0]!r}")
        self.n += 1
        out = tempfile.NamedTemporaryFile(dir=self.workdir, prefix=f"{self.n}-", suffix=".out", delete=False).name
        err = out[:-4] + ".err"
        request = {"argv": args, "stdout": out, "stderr": err, "cwd": str(cwd or self.workdir), "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        with open(out, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        with open(err, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
        result = SimpleNamespace(returncode=reply["returncode"], stdout=stdout, stderr=stderr, args=args)
        if reply["returncode"] == "timeout":
            raise AssertionError(f"timed out after {timeout}s: {' '.join(args)}\n{stdout[-3000:]}\n{stderr[-3000:]}")
        if check and result.returncode != 0:
            raise AssertionError(f"command failed ({result.returncode}): {' '.join(args)}\n--- stdout ---\n"
                                 f"{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}")
        return result


_shared = None


def _fixture(tmp_path_factory):
    global _shared
    if _shared is None:  # one server per session, whichever test module asks first
        from conftest import cli_env

        _shared = ForkCli(cli_env(), str(tmp_path_factory.mktemp("fork_cli"))).__enter__()
    yield _shared
    if _shared is not None and _shared.proc.poll() is None:
        _shared.__exit__(None, None, None)


if __name__ == "__main__":
    serve()
else:
    import pytest

    fork_cli = pytest.fixture(scope="session", name="fork_cli")(_fixture)
