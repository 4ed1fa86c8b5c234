"""Transfer: probe, fine-tune (full / partial / gradual unfreezing / layer-wise LR decay), sparse-delta
training and the scratch baseline (:mod:`slimship.transfer.stage`), on the one training loop
(:mod:`slimship.transfer.trainer`)."""

from slimship.transfer.stage import TrainedModel, TransferInputs, TransferResult, transfer
from slimship.transfer.trainer import TrainConfig, TrainResult, accuracy, train

__all__ = ["transfer", "TransferInputs", "TransferResult", "TrainedModel", "TrainConfig", "TrainResult", "train",
           "accuracy"]
