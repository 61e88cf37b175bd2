"""Many cases in a pool of long-lived worker processes, with crash isolation.

The parent generates each case's source and hands it to an idle worker over a pipe;
the worker writes it to the run's folder, runs it (:func:`run.run_case`) and sends back
plain data. Workers are long-lived, so numba's import and the compiled kernel library
are paid once per worker, but each is retired after ``recycle`` cases (default 100)
and a fresh one started: compiled code is never freed in a process (a worker grew by
about 16 MB a case in the seed-1213 run), so two workers reach the 24 GB development
machine near case 1,500, where the seed-1212 run slowed down and timed a case out.
A worker that dies (segfault, abort, ``os._exit``) or
overruns the per-case timeout is replaced, and its case is recorded as a crash or a
timeout with its seed; the run goes on. Every failing case can be written to ``out`` as
a standalone ``case_<seed>.py`` that reproduces it.
"""
from __future__ import annotations

import collections
import faulthandler
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

from .generate import generate

__all__ = ["run_fuzz", "case_seeds", "summarise", "Worker"]

#: Summary counters, in output order.
COUNTERS = ("forward_mismatches", "grad_mismatches", "mutation_mismatches",
            "exception_mismatches", "crashes", "timeouts")


def case_seeds(seed: int):
    """The seeds of run ``seed``'s cases: ``seed * 1_000_000 + i`` for i = 0, 1, 2, ..."""
    i = 0
    while True:
        yield seed * 1_000_000 + i
        i += 1


def _worker_main(conn, cache_dir: str, work_dir: str, log_path: str, torch_peer: bool,
                 run_case_name: str) -> None:
    """A worker's loop: receive (seed, source), run it, send the result dict back."""
    os.environ["FUSIONNET_CACHE_DIR"] = cache_dir
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    faulthandler.enable(log)
    import importlib  # noqa: PLC0415 - after the environment is set

    module_name, _, fn_name = run_case_name.rpartition(".")
    run_case = getattr(importlib.import_module(module_name), fn_name)
    conn.send("ready")  # case timeouts start after this: imports do not count
    while True:
        task = conn.recv()
        if task is None:
            return
        seed, source = task
        path = os.path.join(work_dir, f"case_{seed}.py")
        with open(path, "w") as f:
            f.write(source)
        print(f"case {seed} started", file=log)
        result = run_case(path, torch_peer=torch_peer)
        conn.send(result.as_dict())
        os.remove(path)


@dataclass
class Worker:
    """One worker process and the case it is running."""

    proc: object
    conn: object
    log_path: str
    ready: bool = False
    seed: int | None = None
    source: str = ""
    started: float = 0.0
    done: int = 0   # cases finished, for retiring the worker after ``recycle`` of them

    def log_tail(self, lines: int = 25) -> str:
        """The end of this worker's stderr log (faulthandler writes crashes there)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Pool:
    """Workers that are replaced when they die or time out."""

    def __init__(self, size: int, cache_dir: str, work_dir: str, log_dir: str,
                 torch_peer: bool, run_case_name: str):
        self.ctx = multiprocessing.get_context("spawn")
        self.args = (cache_dir, work_dir, torch_peer, run_case_name)
        self.log_dir = log_dir
        self.started = 0
        self.startup_failures = 0
        self.workers = [self.spawn() for _ in range(size)]

    def spawn(self) -> Worker:
        """Start a fresh worker."""
        cache_dir, work_dir, torch_peer, run_case_name = self.args
        log_path = os.path.join(self.log_dir, f"worker-{self.started}.log")
        self.started += 1
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, daemon=True, args=(
            child, cache_dir, work_dir, log_path, torch_peer, run_case_name))
        proc.start()
        child.close()
        return Worker(proc, parent, log_path)

    def replace(self, w: Worker, gently: bool = False) -> None:
        """Kill ``w`` (if still alive; ``gently``: ask an idle one to exit first) and put
        a fresh worker in its place."""
        if gently:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            w.proc.join(10)
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        w.conn.close()
        self.workers[self.workers.index(w)] = self.spawn()

    def close(self) -> None:
        """Stop every worker."""
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self.workers:
            w.proc.join(5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)


def _signal_name(code) -> str:
    if code is None or code >= 0:
        return f"exit status {code}"
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _failed(result: dict) -> bool:
    return bool(result.get("mismatches") or result.get("crash") or result.get("timeout")
                or result.get("harness_error"))


def summarise(results: list[dict], seconds: float, torch_peer: bool) -> dict:
    """The one-line JSON summary of a run (see docs/fuzzing.md for each field)."""
    kinds = collections.Counter()
    reasons = collections.Counter()
    for r in results:
        for kind in {m["kind"] for m in r.get("mismatches", [])}:
            kinds[kind] += 1
        reasons.update(r.get("fallback_reasons", []))
    summary = {"cases": len(results)}
    for key in COUNTERS[:4]:
        summary[key] = kinds[key.split("_")[0]]
    summary["crashes"] = sum(1 for r in results if r.get("crash"))
    summary["timeouts"] = sum(1 for r in results if r.get("timeout"))
    summary["fallbacks"] = sum(1 for r in results if r.get("fallback_reasons"))
    summary["fallback_reasons"] = dict(reasons.most_common())
    if torch_peer:
        summary["torch_mismatches"] = kinds["torch"]
    summary["compiled"] = sum(1 for r in results if r.get("compiled"))
    summary["eager_errors"] = sum(1 for r in results if r.get("eager_errors"))
    summary["harness_errors"] = sum(1 for r in results if r.get("harness_error"))
    summary["failing_seeds"] = [r["seed"] for r in results if _failed(r)][:200]
    summary["seconds"] = round(seconds, 1)
    return summary


def _write_repro(out: str, seed: int, source: str, result: dict) -> None:
    """``out/case_<seed>.py``: the case, headed by what this run observed."""
    lines = ["# Observed in the fuzz run:"]
    if result.get("crash"):
        lines.append(f"#   crash: the worker died ({result['crash']})")
    if result.get("timeout"):
        lines.append(f"#   timeout after {result['timeout']} s")
    for m in result.get("mismatches", []):
        lines.append(f"#   [{m['kind']}] {m['phase']}: {m['detail'][:300]}")
    if result.get("harness_error"):
        lines.append("#   harness error: " + result["harness_error"].strip().splitlines()[-1])
    with open(os.path.join(out, f"case_{seed}.py"), "w") as f:
        f.write("\n".join(lines) + "\n" + source)


class _Run:
    """The dispatch loop of one :func:`run_fuzz` call."""

    def __init__(self, pool: Pool, seed: int, cases, deadline, timeout, out, log,
                 recycle: int = 100):
        self.pool, self.seeds, self.cases = pool, case_seeds(seed), cases
        self.recycle = recycle
        self.deadline, self.timeout, self.out, self.log = deadline, timeout, out, log
        self.results: list[dict] = []
        self.dispatched = self.reported = 0
        self.start = time.monotonic()
        self.jsonl = open(os.path.join(out, "results.jsonl"), "w") if out else None  # noqa: SIM115

    def more(self) -> bool:
        """Whether another case should start."""
        if self.cases is not None and self.dispatched >= self.cases:
            return False
        return self.deadline is None or time.monotonic() < self.deadline

    def record(self, w: Worker, result: dict) -> None:
        """Keep one case's result; write its repro if it failed."""
        result.setdefault("seed", w.seed)
        self.results.append(result)
        if self.jsonl:
            self.jsonl.write(json.dumps(result) + "\n")
            self.jsonl.flush()
        if _failed(result):
            kinds = sorted({m["kind"] for m in result.get("mismatches", [])})
            what = ("crash" if result.get("crash") else "timeout" if result.get("timeout")
                    else "harness error" if result.get("harness_error") else ", ".join(kinds))
            print(f"fuzz: case {w.seed}: {what}", file=self.log, flush=True)
            if self.out:
                _write_repro(self.out, w.seed, w.source, result)
        w.seed, w.source = None, ""
        if len(self.results) >= self.reported + 50:
            self.reported = len(self.results)
            print(f"fuzz: {self.reported} cases, {sum(map(_failed, self.results))} failing, "
                  f"{time.monotonic() - self.start:.0f} s", file=self.log, flush=True)

    def dispatch(self) -> None:
        """Give a new case to every idle, ready worker."""
        for w in self.pool.workers:
            if w.ready and w.seed is None and self.more():
                s = next(self.seeds)
                w.seed, w.source, w.started = s, generate(s).source, time.monotonic()
                w.conn.send((s, w.source))
                self.dispatched += 1

    def poll(self, w: Worker) -> None:
        """Collect what ``w`` sent, or notice that it died or overran its case."""
        if w.conn.poll():
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg == "ready":
                w.ready = True
                return
            if isinstance(msg, dict):
                self.record(w, msg)
                w.done += 1
                if w.done >= self.recycle and self.more():
                    self.pool.replace(w, gently=True)
                return
        if not w.proc.is_alive():
            w.proc.join(1)
            if w.seed is None:  # died while starting: a broken environment, not a case
                self.pool.startup_failures += 1
                if self.pool.startup_failures > 3:
                    raise RuntimeError(f"fuzz workers die while starting; see {w.log_path}:\n"
                                       f"{w.log_tail()}")
            else:
                self.record(w, {"seed": w.seed, "crash": _signal_name(w.proc.exitcode),
                                "log": w.log_tail()})
            self.pool.replace(w)
        elif w.seed is not None and time.monotonic() - w.started > self.timeout:
            self.record(w, {"seed": w.seed, "timeout": self.timeout, "log": w.log_tail()})
            self.pool.replace(w)

    def loop(self) -> None:
        """Run until no case is running and none should start."""
        while True:
            self.dispatch()
            busy = [w for w in self.pool.workers if w.seed is not None]
            starting = [w for w in self.pool.workers if not w.ready]
            if not busy and (not starting or not self.more()):
                break
            now = time.monotonic()
            wait_for = min([w.started + self.timeout - now for w in busy] + [1.0])
            watched = busy + starting
            wait([w.conn for w in watched] + [w.proc.sentinel for w in watched],
                 max(0.05, wait_for))
            for w in watched:
                self.poll(w)


def run_fuzz(seed: int = 0, cases: int | None = None, minutes: float | None = None,
             workers: int = 2, out: str | None = None, timeout: float = 180.0,
             torch_peer: bool = False, cache_dir: str | None = None, log=sys.stderr,
             run_case_name: str = "fusionnet.fuzz.run.run_case", recycle: int = 100) -> dict:
    """Run cases until ``cases`` are done or ``minutes`` have passed; return the summary.

    ``out`` (optional) receives ``case_<seed>.py`` for every failing case, ``results.jsonl``
    (one line per case), ``summary.json`` and the workers' logs. ``cache_dir`` is the
    workers' compile cache (``FUSIONNET_CACHE_DIR``): a fresh folder per run unless given.
    ``timeout`` is per case, counted from when a started worker receives it; a worker
    is replaced by a fresh one after ``recycle`` cases (its memory only grows).
    ``run_case_name`` is the dotted name of the function each worker calls (tests plant
    a faulty one to check the pool's crash handling).
    """
    if cases is None and minutes is None:
        raise ValueError("run_fuzz needs cases= or minutes=")
    start = time.monotonic()
    deadline = start + minutes * 60 if minutes is not None else None
    scratch = tempfile.mkdtemp(prefix="fusionnet-fuzz-")
    work_dir = os.path.join(scratch, "cases")
    log_dir = os.path.join(out, "logs") if out else os.path.join(scratch, "logs")
    for d in (work_dir, log_dir):
        os.makedirs(d, exist_ok=True)
    pool = Pool(workers, cache_dir or os.path.join(scratch, "cache"), work_dir, log_dir,
                torch_peer, run_case_name)
    run = _Run(pool, seed, cases, deadline, timeout, out, log, recycle)
    try:
        run.loop()
    finally:
        pool.close()
        if run.jsonl:
            run.jsonl.close()
        shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(run.results, time.monotonic() - start, torch_peer)
    if out:
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary
