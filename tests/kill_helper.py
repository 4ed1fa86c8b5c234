"""Run the slimship CLI and SIGKILL the process (``kill -9`` on itself) at a chosen point of a run.

    python tests/kill_helper.py POINT N run RECIPE --out OUT --quiet

POINT is where the N-th event kills the process:

    cache-commit   after the N-th stage-cache entry was committed (its JSON written)
    cache-weights  after the N-th cache entry's weights were written, before its JSON
    begin          after the run marked its folder INCOMPLETE and removed the previous outputs
    package        after the N-th package was written to packages/
    rename         just before the N-th rename onto model.slim (its temporary file is left behind)
    text           after the N-th text output of the run (1: metrics.json, 2: report.md), before it finished

Used by tests/test_run_kills.py; test code only, the package has no such hooks.
"""

from __future__ import annotations

import os
import signal
import sys


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(n: int):
    count = [0]

    def hit() -> bool:
        count[0] += 1
        return count[0] == n

    return hit


def install(point: str, n: int) -> None:
    import importlib

    import slimship.core.cache as cache
    import slimship.package.stage as stage

    run_module = importlib.import_module("slimship.api.run")  # slimship.api.run is also the name of a function
    hit = _counting(n)
    if point == "cache-commit":
        save = cache.StageCache.save

        def saved(self, *a, **k):
            save(self, *a, **k)
            if hit():
                _kill()

        cache.StageCache.save = saved
    elif point == "cache-weights":
        write = cache.write_text_atomically

        def json_write(target, text):
            if str(target).endswith(".json") and hit():
                _kill()
            write(target, text)

        cache.write_text_atomically = json_write
    elif point == "begin":
        from slimship.api.run_folder import RunFolder

        begin = RunFolder.begin_outputs

        def begun(self, *a, **k):
            begin(self, *a, **k)
            _kill()

        RunFolder.begin_outputs = begun
    elif point == "package":
        write_package = stage.write

        def written(*a, **k):
            result = write_package(*a, **k)
            if hit():
                _kill()
            return result

        stage.write = written
    elif point == "rename":
        replace = os.replace

        def renamed(src, dst, *a, **k):
            if os.path.basename(dst) == "model.slim" and hit():
                _kill()
            return replace(src, dst, *a, **k)

        os.replace = renamed
    elif point == "text":
        write_text = run_module.write_text_atomically

        def wrote(target, text):
            write_text(target, text)
            if hit():
                _kill()

        run_module.write_text_atomically = wrote
    else:
        raise SystemExit(f"unknown kill point {point}")


if __name__ == "__main__":
    point, n, *argv = sys.argv[1:]
    install(point, int(n))
    from slimship.cli.main import main

    sys.exit(main(argv))
