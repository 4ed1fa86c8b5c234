"""The Optuna study: storage, the objective of one trial, and when to stop.

A trial suggests a chain (:meth:`SearchSpace.suggest`), compresses the reference model through it one step at a
time (each step cached under the dense key and the chain so far, so chains that share a prefix share its work),
stops early once a step falls too far below the budget line, and otherwise measures the chain's package as a run
would. Its objectives are validation accuracy (maximise), package bytes and latency relative to the dense graph
timed beside it (minimise); the accuracy budget is a constraint (``Trial.set_constraint``, Optuna 5's
replacement for ``constraints_func``), which both TPE and NSGA-II honour.

Several workers share one study through its storage: trial numbers come from the database, seed trials are
enqueued once (by the worker that creates the study) and each is taken by one worker, a trial interrupted by
Ctrl-C is enqueued again, and one left running by a killed worker is failed and retried after its heartbeat
stops (RDB storage heartbeat).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from slimship.core.cache import stage_key
from slimship.core.errors import SlimshipError
from slimship.evaluate.decision import DEFAULT_CONFIDENCE
from slimship.evaluate.measure import Measurement
from slimship.search.budget import constraint_value, judge_budget, prefix_shortfall
from slimship.search.space import SearchSpace, chain_text

DIRECTIONS = ["maximize", "minimize", "minimize"]  # validation accuracy, package bytes, latency / dense latency
OBJECTIVES = ["val_accuracy", "size_bytes", "latency_ratio"]
CONSTRAINT = "accuracy_budget"
MAX_FAILURES = 5  # consecutive failed trials after which a worker stops (a space that cannot work)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class TrialOutcome:
    """A measured chain: its package's figures, and the dense graph's latency timed interleaved with it."""

    measurement: Measurement
    dense_latency_ms: dict
    compress_seconds: float


class Evaluator(Protocol):
    """What the search needs of a run: compress-and-measure, and the reference it is judged against."""

    reference: Measurement  # the dense transferred model's package, measured
    reference_val_torch: float  # its validation accuracy in PyTorch (compared with intermediate steps)

    def prefix_accuracy(self, steps: list, name: str) -> float:
        """Validation accuracy (PyTorch) of the model after ``steps`` (cached steps are not redone)."""

    def measure(self, steps: list, name: str) -> TrialOutcome:
        """Compress through ``steps``, package, measure (accuracy, bytes, latency beside the dense graph)."""


@dataclass
class SearchJob:
    """One worker's search: where, what space, which budget, when to stop."""

    out: Path
    space: SearchSpace
    budget_points: float
    study_name: str
    fingerprint: dict  # what makes two workers' studies the same (recipe sections and space)
    trials: int | None = None  # finished trials (complete or stopped early) in the study, all workers together
    seconds: float | None = None  # this worker starts no trial after this many seconds
    storage: str | None = None  # an Optuna storage URL; default: SQLite in ``out``
    seed: int = 0
    log: Callable[[str], None] = print
    reference_figures: dict = field(default_factory=dict)
    confidence: float = DEFAULT_CONFIDENCE  # compress.confidence: P a chain needs to count as within budget


class TrialFailed(Exception):
    """A trial's chain could not be compressed or measured (recorded as a failed trial; the search goes on)."""


def storage_url(job: SearchJob) -> str:
    return job.storage or f"sqlite:///{(Path(job.out) / 'study.db').resolve()}"


def open_storage(url: str):
    """An RDB storage with a heartbeat (stale trials of killed workers are failed and retried)."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 120}}  # several workers: wait for the file lock, do not fail
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=300,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except (ImportError, ValueError) as e:
            raise SlimshipError(f"cannot open the study storage {url!r} ({e}): give a URL such as "
                                "sqlite:///path/study.db or postgresql://user@host/db (with its driver installed)") from None
        except Exception as e:  # sqlalchemy's connection errors
            raise SlimshipError(f"cannot open the study storage {url!r}: {str(e).splitlines()[0]}") from None


def open_study(job: SearchJob, storage):
    """Create the study (and enqueue the space's seed trials), or join it when it exists. Returns the study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(storage=storage, study_name=job.study_name, directions=DIRECTIONS)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=job.study_name, storage=storage)
        _check_same_study(study, job)
        job.log(f"study {job.study_name}: joined ({_count(study)} finished trials)")
    else:
        study.set_user_attr("fingerprint", job.fingerprint)
        study.set_user_attr("reference", job.reference_figures)
        study.set_user_attr("budget_points", job.budget_points)
        for i, params in enumerate(job.space.seeds):
            study.enqueue_trial(params, user_attrs={"seed_trial": i})
        job.log(f"study {job.study_name}: created in {storage_url(job)}, {len(job.space.seeds)} seed trial(s), "
                f"{len(job.space.chains)} chain shapes")
    study.sampler = make_sampler(job.space, int(stage_key(job.seed, len(study.trials), WORKER)[:8], 16))
    return study


def _check_same_study(study, job: SearchJob) -> None:
    if [d.name.lower() for d in study.directions] != DIRECTIONS:
        raise SlimshipError(f"study {job.study_name!r} exists with other objectives: use another --study name")
    fp = study.user_attrs.get("fingerprint")  # read from the storage on every access
    for _ in range(20):  # the creating worker sets it right after creating the study
        if fp is not None:
            break
        time.sleep(0.5)
        fp = study.user_attrs.get("fingerprint")
    if fp is not None and fp != job.fingerprint:
        raise SlimshipError(f"study {job.study_name!r} was made with another recipe or search space: use another "
                            "--study name (or --out), or the same recipe and space")
    ref = study.user_attrs.get("reference", {})
    mine = job.reference_figures.get("val_accuracy")
    if ref.get("val_accuracy") not in (None, mine):
        job.log(f"warning: this worker's reference scores {mine} on validation, the study's {ref['val_accuracy']}: "
                "share the run folder's .work between workers so that all start from the same transferred model")


def make_sampler(space: SearchSpace, seed: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # group/multivariate are "experimental" in Optuna 5
        if space.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=space.population, seed=seed)
        return optuna.samplers.TPESampler(n_startup_trials=space.startup_trials, multivariate=True, group=True,
                                          constant_liar=True, seed=seed)


def typical_seconds(study) -> float:
    """The median duration of the study's finished trials (0 when none has finished)."""
    import statistics

    from optuna.trial import TrialState

    done = [(t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.datetime_complete and t.datetime_start and "duplicate_of" not in t.user_attrs]
    return statistics.median(done) if done else 0.0


def _count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_trials(job: SearchJob, study, ev: Evaluator, on_trial: Callable[[], Any] | None = None) -> int:
    """Run trials until the study has ``job.trials`` finished ones or ``job.seconds`` have passed; ``on_trial()``
    runs after each (the outputs are rewritten). Returns how many trials this worker ran."""
    import optuna

    if job.trials is not None and _count(study) >= job.trials:
        job.log(f"study {job.study_name} already has {_count(study)} finished trials (--trials {job.trials})")
        return 0
    if job.seconds is not None and job.seconds <= 0:
        job.log("no time left for trials (--time)")
        return 0
    state = {"ran": 0, "failures": 0}
    t0 = time.monotonic()

    def stop(study, trial) -> None:
        state["ran"] += 1
        state["failures"] = state["failures"] + 1 if trial.state.name == "FAIL" else 0
        if job.trials is not None and _count(study) >= job.trials:
            study.stop()
        if state["failures"] >= MAX_FAILURES:
            job.log(f"{MAX_FAILURES} trials in a row failed: stopping (see the errors above and in trials.json)")
            study.stop()
        if job.seconds is not None:  # start no trial that would most likely end after the deadline
            left, typical = job.seconds - (time.monotonic() - t0), typical_seconds(study)
            if left < typical:
                job.log(f"--time: {left:.0f} s left, a trial takes about {typical:.0f} s: no new trial")
                study.stop()
        if on_trial is not None:
            on_trial()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(lambda t: objective(t, job, study, ev), timeout=job.seconds, callbacks=[stop],
                       catch=(TrialFailed,), gc_after_trial=False)
    return state["ran"]


def objective(trial, job: SearchJob, study, ev: Evaluator) -> tuple[float, float, float]:
    import optuna

    trial.set_user_attr("worker", WORKER)
    if trial.user_attrs.get("measuring"):  # a retry of a dead worker's trial carries its attributes over
        trial.set_user_attr("measuring", False)
    name = f"trial-{trial.number:04d}"
    try:
        steps = job.space.suggest(trial)
        dumps = [s.model_dump(mode="json") for s in steps]
        key = stage_key(dumps)
        trial.set_user_attr("steps", dumps)
        trial.set_user_attr("chain_key", key)
        job.log(f"{name}: {chain_text(trial.params)}")
        same = _same_chain(study, key, trial.number, job, name)
        if same is not None:  # the sampler proposed a chain already measured: its figures hold
            trial.set_user_attr("duplicate_of", same.number)
            trial.set_user_attr("figures", same.user_attrs["figures"])
            trial.set_constraint(CONSTRAINT, same.constraints[CONSTRAINT])
            job.log(f"{name}: same chain as trial {same.number}: its figures")
            return tuple(same.values)
        trial.set_user_attr("measuring", True)
        _stop_early_if_hopeless(trial, steps, name, job, ev)
        outcome = ev.measure(steps, name)
    except (optuna.TrialPruned, TrialFailed):
        raise
    except KeyboardInterrupt:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})  # the next run starts with it
        raise
    except Exception as e:  # noqa: BLE001 - any error of one chain fails that trial, not the search
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        trial.set_user_attr("error", msg)
        trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
        job.log(f"{name}: failed: {msg}")
        raise TrialFailed(msg) from e
    check = judge_budget(outcome.measurement, ev.reference, job.budget_points, job.confidence)
    trial.set_constraint(CONSTRAINT, constraint_value(check))
    figs = trial_figures(outcome, ev.reference, check)
    trial.set_user_attr("figures", figs)
    job.log(f"{name}: val {100 * figs['val_accuracy']:.2f} % ({figs['val_drop_points']:+.2f}), "
            f"{figs['size_bytes']:,} B ({figs['x_smaller']:.2f}x smaller), speed-up "
            + " / ".join(f"{v:.2f}x" for v in figs["speedup"].values())
            + f", {'within' if check.within else 'outside'} budget")
    return tuple(figs[k] for k in OBJECTIVES)


def _stop_early_if_hopeless(trial, steps: list, name: str, job: SearchJob, ev: Evaluator) -> None:
    """After each step but the last, score the intermediate model on validation; stop the trial when it is
    ``prune_slack`` points beyond the budget line (recorded as pruned and infeasible, so samplers learn)."""
    import optuna

    accs = []
    for i in range(len(steps) - 1):
        accs.append(round(ev.prefix_accuracy(steps[: i + 1], name), 6))
        trial.set_user_attr("step_val_accuracy", accs)
        short = prefix_shortfall(accs[-1], ev.reference_val_torch, job.budget_points)
        if short > job.space.prune_slack:
            trial.set_user_attr("stopped_after_step", i + 1)
            trial.set_constraint(CONSTRAINT, round(short, 4))
            job.log(f"{name}: stopped after step {i + 1} ({steps[i].method}): val {100 * accs[-1]:.2f} %, "
                    f"{short:.2f} points below the budget line")
            raise optuna.TrialPruned()


def _same_chain(study, key: str, number: int, job: SearchJob, name: str, poll: float = 2.0):
    """A finished trial that measured the chain ``key`` already, else None. When an earlier trial (another
    worker's) is measuring it right now, wait for it (up to three typical trial times, in case that worker died)
    rather than measure the same chain twice."""
    from optuna.trial import TrialState

    deadline, said = None, False
    while True:
        running = False
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number == number or t.user_attrs.get("chain_key") != key:
                continue
            if t.state == TrialState.COMPLETE and "figures" in t.user_attrs:
                return t
            # wait for an earlier trial, or for any that has started measuring (it checked before this one
            # recorded its chain): of two workers that propose one chain at once, exactly one measures it
            first = t.number < number or t.user_attrs.get("measuring")
            running = running or (t.state == TrialState.RUNNING and bool(first))
        if not running:
            return None
        if deadline is None:
            deadline = time.monotonic() + 3 * max(typical_seconds(study), 60.0)
        if time.monotonic() > deadline:
            return None
        if not said:
            job.log(f"{name}: another worker is measuring the same chain: waiting for its figures")
            said = True
        time.sleep(poll)


def trial_figures(outcome: TrialOutcome, reference: Measurement, check) -> dict:
    """What a trial records (JSON): the measurement relative to the reference and the dense timing beside it."""
    m = outcome.measurement
    dense = outcome.dense_latency_ms
    speedup = {k: round(dense[k] / v, 4) for k, v in m.latency_ms.items() if v and k in dense}
    return {
        "val_accuracy": m.val_accuracy, "test_accuracy": m.accuracy,
        "val_drop_points": round(100 * (m.val_accuracy - reference.val_accuracy), 4),
        "test_drop_points": round(100 * (m.accuracy - reference.accuracy), 4),
        "size_bytes": m.size_bytes, "x_smaller": round(reference.size_bytes / m.size_bytes, 4),
        "params": m.params, "nonzero_params": m.nonzero_params, "macs": m.macs,
        "x_fewer_macs": round(reference.macs / m.macs, 4) if m.macs else None,
        "latency_ms": m.latency_ms, "dense_latency_ms": dense, "speedup": speedup,
        "latency_ratio": round(max(1 / s for s in speedup.values()), 6) if speedup else float("inf"),
        "within_budget": check.within, "shortfall_points": check.shortfall_points, "budget_rule": check.rule,
        "package": m.package, "compress_seconds": round(outcome.compress_seconds, 1), "runtime": m.runtime,
    }
