"""What a search leaves in its folder: every trial with its figures, the Pareto front, the recommended models and a
Markdown summary, rebuilt from the study's storage (so any worker writes the same view of a shared study).

- ``trials.json`` / ``trials.csv``: every trial (finished, stopped early, failed) with its chain and figures;
- ``pareto.json``: the trials within budget that no other trial within budget beats on all three objectives;
- ``recommended/smallest.slim``, ``recommended/fastest.slim``: copies of the smallest and the fastest package
  within budget (``search.json`` says which trials they are); when no trial is within budget, ``closest/`` keeps
  the packages of the trials closest to the budget line, and the summary says so first;
- ``summary.md``: the summary for a terminal; ``search.json``: the same, as data.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from slimship.core.atomic import write_atomically, write_text_atomically
from slimship.search.space import chain_text
from slimship.search.study import CONSTRAINT, storage_url

CLOSEST = 3  # trials kept when none is within budget
RETIME = 3  # the fastest trials timed again, together, before one is recommended


def trial_records(study) -> list[dict]:
    """Every trial of the study as a flat dictionary (its figures merged in), by trial number."""
    out = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rec = {"number": t.number, "state": t.state.name.lower(), "worker": ua.get("worker"),
               "chain": t.params.get("chain"), "chain_text": chain_text(t.params), "params": t.params,
               "steps": ua.get("steps"), "seconds": round(secs, 1) if secs is not None else None,
               "constraint": t.constraints.get(CONSTRAINT)}
        for k in ("seed_trial", "retry_of", "duplicate_of", "error", "stopped_after_step", "step_val_accuracy"):
            if k in ua:
                rec[k] = ua[k]
        rec.update(ua.get("figures", {}))
        out.append(rec)
    return out


def _measured(records: list[dict]) -> list[dict]:
    """Complete trials with their own figures (a duplicate repeats an earlier trial's)."""
    return [r for r in records if r["state"] == "complete" and "size_bytes" in r and "duplicate_of" not in r]


def pareto_front(records: list[dict]) -> list[dict]:
    """Trials within budget that no other trial within budget dominates (val accuracy up, bytes and latency down)."""
    ok = [r for r in _measured(records) if r["within_budget"]]

    def key(r):
        return (-r["val_accuracy"], r["size_bytes"], r["latency_ratio"])

    def dominates(a, b):
        return all(x <= y for x, y in zip(key(a), key(b))) and key(a) != key(b)

    return [r for r in ok if not any(dominates(o, r) for o in ok)]


def min_speedup(r: dict) -> float:
    return min(r["speedup"].values()) if r.get("speedup") else 0.0


def recommend(records: list[dict], reference: dict, *, retime=None) -> dict:
    """The smallest and the fastest compressed package within budget (the fastest by its slowest batch size,
    re-timed beside the dense graph when ``retime`` is given); when none is within budget, the closest trials."""
    ok = [r for r in _measured(records) if r["within_budget"]]
    out: dict = {"within_budget": len(ok)}
    if not ok:
        near = sorted(_measured(records), key=lambda r: r["shortfall_points"])[:CLOSEST]
        out["closest"] = [r["number"] for r in near]
        return out
    out["smallest"] = min(ok, key=lambda r: (r["size_bytes"], -r["val_accuracy"]))["number"]
    fast = sorted(ok, key=min_speedup, reverse=True)[:RETIME]
    if retime is not None and len(fast) > 1:
        timed = retime(fast, reference)
        if timed:
            out["retimed_speedup"] = {str(n): s for n, s in timed.items()}
            fast = sorted((r for r in fast if r["number"] in timed), key=lambda r: min(timed[r["number"]].values()),
                          reverse=True) or fast
    out["fastest"] = fast[0]["number"]
    return out


def retime_packages(input_shape: tuple, batch_sizes: list[int], runs: int, example=None):
    """A ``retime(records, reference)`` that times the trials' packages again (each as it ships: every batch size
    in the runtime its package records for it),
    interleaved with the dense one in ONNX Runtime (only packages on this machine); returns
    ``{number: {batchB: speed-up}}``. ``example``: a model input batch (token ids for a text model)."""

    def retime(records: list[dict], reference: dict) -> dict:
        from slimship.core.runtime import REFERENCE_RUNTIME, session, side_by_side
        from slimship.evaluate.latency import interleaved_session_latency
        from slimship.package.pack import load_package

        have = [r for r in records if Path(r["package"]).is_file()]
        if not have or not Path(reference.get("package", "")).is_file():
            return {}
        with side_by_side():
            sessions = {"dense": session(load_package(reference["package"]).onnx, REFERENCE_RUNTIME)}
            for r in have:
                pkg = load_package(r["package"])
                sessions[str(r["number"])] = pkg.loaded_session()
        lat = interleaved_session_latency(sessions, tuple(input_shape), tuple(batch_sizes), runs=runs, rounds=10,
                                          example=example)
        return {r["number"]: {k: round(lat["dense"][k] / v, 4) for k, v in lat[str(r["number"])].items()}
                for r in have}

    return retime


def write_outputs(out: Path, study, job, *, retime=None) -> dict:
    """Write every output file from the study's storage; returns ``search.json``'s content."""
    out = Path(out)
    records = trial_records(study)
    reference = dict(study.user_attrs.get("reference", {}))
    rec = recommend(records, reference, retime=retime)
    front = pareto_front(records)
    by = {r["number"]: r for r in records}
    counts = {s: sum(r["state"] == s for r in records) for s in ("complete", "pruned", "fail", "running", "waiting")}
    summary = {"study": job.study_name, "storage": storage_url(job), "budget_points": job.budget_points,
               "budget_rule": next((r["budget_rule"] for r in records if "budget_rule" in r), None),
               "reference": reference, "trials": counts, "recommended": rec,
               "pareto": [r["number"] for r in front], "nothing_within_budget": rec["within_budget"] == 0}
    for role in ("smallest", "fastest"):
        if role in rec:
            summary[role] = _keep(by[rec[role]], out / "recommended" / f"{role}.slim")
    for n in rec.get("closest", []):
        _keep(by[n], out / "closest" / f"trial-{n:04d}.slim")
    write_text_atomically(out / "trials.json", json.dumps(records, indent=2, default=str))
    write_text_atomically(out / "trials.csv", _csv(records))
    write_text_atomically(out / "pareto.json", json.dumps(front, indent=2, default=str))
    write_text_atomically(out / "search.json", json.dumps(summary, indent=2, default=str))
    write_text_atomically(out / "summary.md", render_summary(summary, records, front))
    return summary


def _keep(r: dict, target: Path) -> dict:
    """Copy a trial's package to ``target`` when it is on this machine; returns what the summary says of it."""
    src = Path(r.get("package", ""))
    kept = src.is_file()
    if kept:
        write_atomically(target, lambda tmp: shutil.copyfile(src, tmp))
    return {"trial": r["number"], "chain": r["chain_text"], "package": str(target) if kept else r.get("package"),
            "copied": kept}


_CSV = ["number", "state", "worker", "chain_text", "val_accuracy", "val_drop_points", "test_accuracy",
        "test_drop_points", "size_bytes", "x_smaller", "x_fewer_macs", "speedup_batch1", "speedup_batch64",
        "within_budget", "shortfall_points", "constraint", "stopped_after_step", "duplicate_of", "error", "seconds",
        "package"]


def _csv(records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({**r, **{f"speedup_{k}": v for k, v in (r.get("speedup") or {}).items()}})
    return buf.getvalue()


def _row(r: dict) -> str:
    if "size_bytes" not in r:
        why = (f"stopped after step {r['stopped_after_step']} (val {100 * r['step_val_accuracy'][-1]:.2f} %)"
               if "stopped_after_step" in r else r.get("error", ""))
        state = "stopped early" if r["state"] == "pruned" else r["state"]
        return f"| {r['number']} | {state} | {r['chain_text']} | {why} | | | | | | | |"
    sp = " / ".join(f"{v:.2f}x" for v in r["speedup"].values())
    return (f"| {r['number']} | {r['state']} | {r['chain_text']} | {100 * r['val_accuracy']:.2f} "
            f"({r['val_drop_points']:+.2f}) | {100 * r['test_accuracy']:.2f} ({r['test_drop_points']:+.2f}) | "
            f"{r['size_bytes']:,} | {r['x_smaller']:.2f}x | {sp} | {'yes' if r['within_budget'] else 'no'} | "
            f"{r.get('duplicate_of', '')} | {r['seconds'] or ''} |")


_HEAD = ("| trial | state | chain | val % (Δ) | test % (Δ) | package bytes | × smaller | speed-up (batch sizes) | "
         "within budget | same as | s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def render_summary(summary: dict, records: list[dict], front: list[dict]) -> str:
    """The Markdown summary: the verdict first, then the recommendations, the Pareto front and every trial."""
    ref, rec, by = summary["reference"], summary["recommended"], {r["number"]: r for r in records}
    c = summary["trials"]
    lines = [f"# slimship search: study {summary['study']}", "",
             f"{c['complete']} trials measured, {c['pruned']} stopped early, {c['fail']} failed; storage "
             f"`{summary['storage']}`.",
             f"Budget: {summary['budget_rule'] or str(summary['budget_points']) + ' point(s) on validation'}. "
             f"Reference {ref.get('name', '?')}: val {100 * ref.get('val_accuracy', float('nan')):.2f} %, test "
             f"{100 * ref.get('test_accuracy', float('nan')):.2f} %, {ref.get('size_bytes', 0):,} bytes.", ""]
    if summary["nothing_within_budget"]:
        lines += ["**No trial is within the accuracy budget.** The closest trials are kept in `closest/`:", ""]
        lines += [f"- trial {n}: {by[n]['chain_text']}, {by[n]['shortfall_points']:.2f} points short "
                  f"({by[n]['x_smaller']:.2f}x smaller)" for n in rec.get("closest", [])]
        if not rec.get("closest"):
            lines.append("- none: no trial was measured (see the failed and stopped trials below)")
    else:
        for role, what in (("smallest", "Smallest"), ("fastest", "Fastest")):
            r = by[rec[role]]
            retimed = rec.get("retimed_speedup", {}).get(str(r["number"]))
            sp = retimed or r["speedup"]
            lines.append(f"- **{what} within budget**: trial {r['number']}, {r['chain_text']}: {r['size_bytes']:,} "
                         f"bytes ({r['x_smaller']:.2f}x smaller), speed-up{' (re-timed)' if retimed else ''} "
                         + " / ".join(f"{v:.2f}x {k}" for k, v in sp.items())
                         + f", val {r['val_drop_points']:+.2f}, test {r['test_drop_points']:+.2f} points → "
                         f"`{summary[role]['package']}`")
    lines += ["", "## Pareto front (within budget)", "", _HEAD, *(_row(r) for r in front), "",
              "## Every trial", "", _HEAD, *(_row(r) for r in records), ""]
    return "\n".join(lines)
