"""Transfer: probe, fine-tune (full / partial / gradual unfreezing / layer-wise LR decay), LoRA adapters
(:mod:`slimship.transfer.lora`), sparse-delta training and the scratch baseline (:mod:`slimship.transfer.stage`),
on the one training loop (:mod:`slimship.transfer.trainer`)."""

from slimship.transfer import lora as _lora  # noqa: F401  (registers strategy "lora")
from slimship.transfer.stage import TrainedModel, TransferInputs, TransferResult, transfer
from slimship.transfer.strategies import STRATEGIES
from slimship.transfer.trainer import TrainConfig, TrainResult, accuracy, train

__all__ = ["transfer", "TransferInputs", "TransferResult", "TrainedModel", "TrainConfig", "TrainResult", "train",
           "accuracy", "STRATEGIES"]
