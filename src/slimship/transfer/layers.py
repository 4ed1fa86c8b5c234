"""Which parameters belong to which depth of the network: stages for freezing, unfreezing and LR decay.

We use timm's own grouping (``model.group_matcher(coarse=True)``): stem, each stage, the last conv; the
classifier is always the top group. That makes freezing and layer-wise decay work for any timm model.
"""

from __future__ import annotations

from torch import nn


def parameter_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped from input to output; the classifier is the last group."""
    from timm.models import group_parameters

    head = {n for n, _ in model.named_parameters() if n.startswith(_classifier_name(model) + ".")}
    groups: list[list[str]] = []
    try:
        grouped = group_parameters(model, model.group_matcher(coarse=True))
        for _, names in sorted(grouped.items(), key=lambda kv: kv[0]):
            body = [n for n in names if n not in head]
            if body:
                groups.append(body)
    except (AttributeError, NotImplementedError):
        groups = [[n for n, _ in model.named_parameters() if n not in head]]
    covered = {n for g in groups for n in g} | head
    rest = [n for n, _ in model.named_parameters() if n not in covered]
    if rest:
        groups.append(rest)
    groups.append(sorted(head))
    return groups


def _classifier_name(model: nn.Module) -> str:
    return getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")


def set_trainable_(model: nn.Module, groups: list[list[str]], first_trainable: int) -> None:
    """Freeze groups [0, first_trainable); train the rest (classifier included)."""
    trainable = {n for g in groups[first_trainable:] for n in g}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)


def bn_eval_(model: nn.Module) -> None:
    """Keep BatchNorm running statistics fixed (affine parameters still train).

    With small CPU budgets, BatchNorm in train mode re-estimates ImageNet statistics from a few hundred
    batches of a very different domain and loses up to 20 points (REFERENCE.md W0); frozen statistics do not.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
