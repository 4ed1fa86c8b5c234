"""A run's output folder stays self-consistent, even when a run is killed (``kill -9``, power loss) midway.

Every file a run writes is atomic (``slimship.core.atomic``), but a run writes many files: a re-run killed between
``packages/`` and ``model.slim`` used to leave the new packages beside the previous run's model, metrics and
report. So the outputs are written as one transaction:

1. Before its first output, a run writes the marker file ``INCOMPLETE`` (saying what happened and what to do),
   then removes the previous run's outputs (``model.slim``, ``metrics.json``, ``report.md``, ``report.html``,
   ``predictions.npz``, ``packages/``).
2. It writes its outputs; the marker is removed last.

So a folder without the marker holds one run's outputs, all of them; a folder with the marker holds an
unfinished run, which the next ``slimship run`` into it repairs (the stage cache in ``.work`` makes that quick).
Commands that read a package in such a folder say so (:func:`incomplete_run`). Temporary files a killed writer
left behind (``.NAME.tmp-PID-RANDOM``, see :func:`slimship.core.atomic.temp_name`) are removed when a run starts,
once the process that wrote them is gone. The stage cache survives kills by itself: an entry's JSON is written
last and is its commit.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from slimship.core.atomic import fsync_dir, write_text_atomically
from slimship.core.errors import SlimshipError

#: The marker of an unfinished run, in the run folder.
MARKER = "INCOMPLETE"
#: What one run writes (beside run.log, which is appended to, and the stage cache .work/).
OUTPUT_FILES = ("model.slim", "metrics.json", "report.md", "report.html", "predictions.npz")
OUTPUT_FOLDERS = ("packages",)

_TEMP = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


@dataclass
class RunFolder:
    """The output folder of a run (see the module docstring). ``notes`` say what opening it found or repaired."""

    path: Path
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, out: str | Path, fresh: bool = False, clean: bool = True) -> RunFolder:
        """Create the folder if needed, drop the stage cache with ``fresh``, remove orphaned temporary files
        (unless ``clean`` is False: a search folder may be shared with workers on other machines, whose PIDs mean
        nothing here)."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise SlimshipError(f"--out {out} exists and is not a folder: choose another path")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SlimshipError(f"cannot create --out {out} ({e.strerror or e}): choose another path") from None
        if fresh and (out / ".work").exists():
            shutil.rmtree(out / ".work")
        folder = cls(out)
        if (out / MARKER).exists():
            folder.notes.append(f"{out} holds an unfinished run ({MARKER}): this run replaces its outputs")
        removed = remove_orphaned_temp_files(out) if clean else 0
        if removed:
            folder.notes.append(f"removed {removed} temporary file(s) left by a killed run")
        return folder

    def begin_outputs(self, recipe_path: str | None = None) -> None:
        """Mark the folder unfinished, then remove the previous run's outputs."""
        again = f"slimship run {recipe_path or 'RECIPE'} --out {self.path}"
        write_text_atomically(self.path / MARKER, (
            "This run folder is incomplete: a run started writing its outputs here and has not finished (it is "
            "still running, or it was stopped). Files here may be missing; the ones present come from that run.\n"
            f"Re-run it to complete the folder:  {again}\n"))
        for name in OUTPUT_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in OUTPUT_FOLDERS:
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)

    def finish(self) -> None:
        """Every output is written: remove the marker (the commit of the run)."""
        (self.path / MARKER).unlink(missing_ok=True)
        fsync_dir(self.path)


def incomplete_run(path: str | Path) -> Path | None:
    """The unfinished run folder a package belongs to (``RUN/model.slim`` or ``RUN/packages/NAME.slim`` with
    ``RUN/INCOMPLETE``), or None."""
    p = Path(path).expanduser()
    for folder in (p.parent, p.parent.parent):
        if (folder / MARKER).is_file() and (p.parent == folder or p.parent.name in OUTPUT_FOLDERS):
            return folder
    return None


def remove_orphaned_temp_files(out: Path) -> int:
    """Remove hidden temporary files of atomic writes in ``out``, ``out/packages`` and ``out/.work`` whose writer
    process is gone; returns how many were removed."""
    removed = 0
    for folder in (out, *(out / n for n in OUTPUT_FOLDERS), out / ".work"):
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            m = _TEMP.match(f.name)
            if m and f.is_file() and not _writer_alive(int(m["pid"]), f):
                f.unlink(missing_ok=True)
                removed += 1
    return removed


def _writer_alive(pid: int, f: Path) -> bool:
    """Is the process that wrote ``f`` (named by its PID) still running? PIDs are reused, and thread IDs share
    their number space (32,768 on many Linux machines, soon spent by threaded runtimes): a number that is now a
    thread of another process, or a process started after ``f`` was last written, is not its writer."""
    if not _alive(pid):
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        tgid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Tgid:"))
        if tgid != pid:
            return False  # a thread of another process
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
        return started <= f.stat().st_mtime + 2  # started after the file was last written: not its writer
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc to ask: trust the PID


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process (or a PID we cannot ask about): leave its files alone
    return True
