"""Console output for long runs: rich progress bars (rate, ETA) and a log mirrored to a file."""

from __future__ import annotations

import sys
import time
from pathlib import Path


class Reporter:
    """Logs lines to the console and to ``log_path``; hands out progress tasks.

    ``quiet`` keeps the log file but prints nothing (used by tests).
    """

    def __init__(self, log_path: Path | None = None, quiet: bool = False):
        self.log_path = Path(log_path) if log_path else None
        self.quiet = quiet
        self._start = time.perf_counter()
        self._bar = None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, msg: str) -> None:
        stamp = f"[{time.perf_counter() - self._start:7.1f}s]"
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"{stamp} {msg}\n")
        if not self.quiet:
            if self._bar is not None:
                self._bar.console.print(f"{stamp} {msg}", highlight=False, markup=False)
            else:
                print(f"{stamp} {msg}", flush=True)

    def task(self, desc: str, total: float):
        if self.quiet or not sys.stderr.isatty() and not sys.stdout.isatty():
            return _NullTask(self, desc)
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
        tid = self._bar.add_task(desc, total=total, rate="")
        return _RichTask(self, tid, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _RichTask:
    def __init__(self, rep: Reporter, tid, total):
        self.rep, self.tid, self.total = rep, tid, total
        self.t0 = time.perf_counter()
        self.n = 0.0

    def advance(self, n: float = 1, rate: str | None = None) -> None:
        self.n += n
        bar = self.rep._bar
        if bar is not None:
            bar.update(self.tid, advance=n, rate=rate or f"{self.n / max(time.perf_counter() - self.t0, 1e-9):.1f}/s")

    def done(self) -> None:
        bar = self.rep._bar
        if bar is not None:
            bar.remove_task(self.tid)


class _NullTask:
    """No terminal: log a line at start and end instead of drawing a bar."""

    def __init__(self, rep: Reporter, desc: str):
        self.rep, self.desc = rep, desc
        self.t0 = time.perf_counter()

    def advance(self, n: float = 1, rate: str | None = None) -> None:
        pass

    def done(self) -> None:
        pass
