"""JSON lines between a benchmark and its worker processes (standard library only: the timm worker runs
in its own virtual environment, which has none of this project's dependencies).

A request is one line `{"cmd": name, ...keyword arguments}`; the reply is one line `{"ok": result}` or
`{"error": traceback}`. The worker answers on a private copy of its stdout; its file descriptor 1 is
pointed at stderr, so whatever libraries print cannot corrupt the channel.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback


ALLOCATOR_VARIABLES = ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")


def allocator_environment() -> dict:
    """The environment variables that pick and tune this process's malloc, as they are set."""
    return {name: os.environ[name] for name in ALLOCATOR_VARIABLES if os.environ.get(name)}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Stopwatch:
    """Wall and CPU seconds since it was made: `watch = Stopwatch(); ...; wall, cpu = watch.read()`."""

    def __init__(self):
        self.start, self.start_cpu = time.perf_counter(), time.process_time()

    def read(self):
        return time.perf_counter() - self.start, time.process_time() - self.start_cpu


def timed(fn, count: int) -> dict:
    """{'wall': seconds, 'cpu': this process's CPU seconds (all threads), 'system': the part of those spent
    in the kernel, 'page_faults': minor page faults} of each of `count` calls of `fn`, which must block
    until its work is done. CPU time is less sensitive than wall time to other processes sharing the
    cores, but counts threads spinning while they wait for work."""
    times = {"wall": [], "cpu": [], "system": [], "page_faults": []}
    for _ in range(count):
        before = resource.getrusage(resource.RUSAGE_SELF)
        watch = Stopwatch()
        fn()
        wall, cpu = watch.read()
        after = resource.getrusage(resource.RUSAGE_SELF)
        times["wall"].append(wall)
        times["cpu"].append(cpu)
        times["system"].append(after.ru_stime - before.ru_stime)
        times["page_faults"].append(after.ru_minflt - before.ru_minflt)
    return times


def serve(handlers: dict) -> None:
    """Answers requests from stdin with `handlers[cmd](**arguments)` until 'exit' or end of input."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "exit":
            break
        try:
            reply = {"ok": handlers[cmd](**request)}
        except Exception:  # reported to the caller, which raises it with the worker's traceback
            reply = {"error": traceback.format_exc()}
        channel.write(json.dumps(reply) + "\n")


class WorkerError(RuntimeError):
    pass


class Worker:
    """A worker process (`argv`, extra environment `env`) answering `call(cmd, **arguments)`."""

    def __init__(self, name: str, argv: list, env: dict = None, log_path: str = None):
        self.name = name
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log or None, text=True, bufsize=1,
                                        env={**os.environ, **(env or {})})

    def call(self, cmd: str, **arguments):
        try:
            self.process.stdin.write(json.dumps({"cmd": cmd, **arguments}) + "\n")
            line = self.process.stdout.readline()
        except BrokenPipeError:  # it died before this call (killed by the OOM killer, say)
            line = ""
        if not line:
            code = self.process.wait()
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise WorkerError(f"worker {self.name} {how} during {cmd!r}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"worker {self.name} failed in {cmd!r}:\n{reply['error']}")
        return reply["ok"]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
            self.process.stdin.close()
            self.process.wait()
        if self.log:
            self.log.close()
