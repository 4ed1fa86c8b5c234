"""Transfer: probe, fine-tune (full / partial / gradual unfreezing / layer-wise LR decay) and the scratch baseline.

:func:`transfer_model` runs what the recipe's ``transfer`` section asks for and returns one entry per model
(``probe``, ``finetuned`` and ``scratch``), plus ``dense``: the transferred model compression starts from.
"""

from __future__ import annotations

import copy
import time

from slimship.transfer.finetune import TrainConfig, accuracy, train
from slimship.transfer.probe import extract_features, fit_linear_head, set_head_


def _train_config(t, *, budget, lr, bn, seed, freeze_stages=0, gradual=False, layer_decay=None) -> TrainConfig:
    return TrainConfig(
        epochs=budget.epochs, seconds=budget.seconds, lr=lr, weight_decay=t.weight_decay, batch_size=t.batch_size,
        label_smoothing=t.label_smoothing, bn=bn, freeze_stages=freeze_stages, gradual_unfreeze=gradual,
        layer_decay=layer_decay, hflip=t.augment.hflip, shift=t.augment.shift, evals=t.evals, seed=seed,
    )


def _notes(r) -> tuple[dict, float]:
    """(notes, seconds) of a :class:`~slimship.transfer.finetune.TrainResult`, as the stage cache keeps them."""
    return {"history": r.history, "steps": r.steps, "images_per_second": round(r.images_per_second, 1)}, r.seconds


def _cached_training(cache, key: str, model, run) -> tuple[dict, float]:
    """Load ``model``'s trained state from the stage cache, or ``run()`` (trains ``model`` in place and returns
    ``(notes, seconds)``) and cache it. Returns ``(notes, seconds)`` either way."""
    hit = cache.load(key, model)
    if hit is not None:
        return hit["notes"], hit["seconds"]
    notes, secs = run()
    cache.save(key, {"notes": notes, "seconds": secs}, model)
    return notes, secs


def _key(*parts) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def transfer_model(recipe, model, build, train_data, val_data, pre, cache, base_key: str, rep) -> dict:
    """Run the transfer section. ``build(weights)`` makes a fresh model (weights None → random init)."""
    t = recipe.transfer
    X, Y = train_data
    VX, VY = val_data
    results: dict = {}
    # The fine-tune's cache key must not change when only the scratch baseline's settings do.
    tdict = t.model_dump(mode="json", exclude={"scratch_baseline", "scratch_budget", "scratch_lr", "delta"})

    # -- linear probe (also the head initialisation of LP-FT) --
    probe_key = _key(base_key, "probe")
    probe_model = copy.deepcopy(model)
    hit = cache.load(probe_key, probe_model)
    if hit is None:
        t0 = time.perf_counter()
        task = rep.task("features", total=len(X) + len(VX))
        f_tr = extract_features(probe_model, X, pre, task=task)
        f_va = extract_features(probe_model, VX, pre, task=task)
        task.done()
        w, b, info = fit_linear_head(f_tr, Y, f_va, VY, probe_model.get_classifier().out_features)
        set_head_(probe_model, w, b)
        info["seconds"] = time.perf_counter() - t0
        cache.save(probe_key, {"notes": info}, probe_model)
    else:
        info = hit["notes"]
    rep.log(f"probe: val {info['val_accuracy']:.4f} (L2 {info['l2']}, {info['seconds']:.0f} s)")
    results["probe"] = {"name": "probe", "kind": "probe", "model": probe_model.eval(), "seconds": info["seconds"],
                        "notes": {"l2": info["l2"]}, "key": probe_key}

    if t.strategy == "probe":
        results["dense"] = results["probe"]
    else:
        ft_key = _key(base_key, tdict)
        ft_model = copy.deepcopy(probe_model if t.head_init == "probe" else model)
        cfg = _train_config(t, budget=t.budget, lr=t.lr, bn=t.bn, seed=recipe.seed,
                            freeze_stages=t.freeze_stages if t.strategy == "partial" else 0,
                            gradual=t.gradual_unfreeze, layer_decay=t.layer_decay)
        notes, secs = _cached_training(cache, ft_key, ft_model, lambda: _notes(
            train(ft_model, X, Y, VX, VY, pre, cfg, progress=rep, desc=t.strategy)))
        rep.log(f"{t.strategy}: val {max(h['val_accuracy'] for h in notes['history']):.4f} "
                f"({notes['steps']} steps, {notes['images_per_second']} img/s, {secs:.0f} s)")
        results["finetuned"] = {"name": "finetuned", "kind": t.strategy, "model": ft_model.eval(), "seconds": secs,
                                "notes": notes, "key": ft_key}
        results["dense"] = results["finetuned"]
        if t.delta is not None:
            results["finetuned-delta"] = _delta_model(recipe, model, ft_model, ft_key, train_data, val_data, pre,
                                                      cache, rep)

    if t.scratch_baseline:
        sc_key = _key(base_key, tdict, "scratch", t.model_dump(mode="json", include={"scratch_budget", "scratch_lr"}))
        sc_model = build(None).model
        sc_cfg = _train_config(t, budget=t.scratch_budget or t.budget, lr=t.scratch_lr, bn="train", seed=recipe.seed)
        notes, secs = _cached_training(cache, sc_key, sc_model, lambda: _notes(
            train(sc_model, X, Y, VX, VY, pre, sc_cfg, progress=rep, desc="scratch")))
        rep.log(f"scratch: val {max(h['val_accuracy'] for h in notes['history']):.4f} ({notes['steps']} steps, {secs:.0f} s)")
        results["scratch"] = {"name": "scratch", "kind": "scratch", "model": sc_model.eval(), "seconds": secs,
                              "notes": notes, "key": sc_key}
    return results


def _delta_model(recipe, base_model, ft_model, ft_key, train_data, val_data, pre, cache, rep) -> dict:
    """The fine-tune turned into base + a sparse delta (:mod:`slimship.transfer.delta`), cached."""
    from slimship.package.task_delta import backbone_state
    from slimship.transfer.delta import train_sparse_delta

    t, dt = recipe.transfer, recipe.transfer.delta
    key = _key(ft_key, "delta", dt.model_dump(mode="json", exclude={"value_bits"}))
    model = copy.deepcopy(ft_model)
    cfg = _train_config(t, budget=dt.budget, lr=dt.lr, bn=t.bn, seed=recipe.seed)
    cfg.kd_alpha = dt.kd_alpha

    def run():
        masks, r = train_sparse_delta(model, backbone_state(base_model), dt.density, (*train_data, *val_data), pre,
                                      cfg, allocation=dt.allocation, dense_depthwise=dt.dense_depthwise,
                                      progress=rep)
        return {"history": r.history, "steps": r.steps, "density": dt.density, "kept": masks.kept,
                "of": masks.total}, r.seconds

    notes, secs = _cached_training(cache, key, model, run)
    rep.log(f"delta {dt.density:g}: val {max(h['val_accuracy'] for h in notes['history']):.4f} "
            f"({notes['kept']:,} of {notes['of']:,} weights differ from the base; {notes['steps']} steps, {secs:.0f} s)")
    return {"name": "finetuned-delta", "kind": "delta", "model": model.eval(), "seconds": secs, "notes": notes,
            "key": key}


__all__ = ["transfer_model", "TrainConfig", "train", "accuracy"]
