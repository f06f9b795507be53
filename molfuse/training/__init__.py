"""Training and storage: checkpoints with cards, training data, one thin LightningModule.

- :mod:`.checkpoints`: ``save_checkpoint`` / ``load_model`` / ``read_card`` (safetensors + card);
- :mod:`.data`: :class:`StateDataset` (states, masks, conditions) and the data kinds;
- :mod:`.config`: :class:`TrainConfig`;
- :mod:`.module`, :mod:`.loop`: the LightningModule and ``train`` (need lightning);
- :mod:`.workflow`: training workflows as dataclasses; :mod:`.run`: ``molfuse train`` (needs lightning).

Checkpoints, data and configs import without lightning (a fitted barycenter or a sampling run
never needs it); ``train``, ``train_from_workflow`` and the rest load lightning on first use
and say which extra to install when it is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from .checkpoints import CheckpointError, load_model, read_card, save_checkpoint
from .config import TrainConfig
from .data import StateDataset, as_state_dataset, build_data, check_data_spec
from .workflow import TrainWorkflow, expand_sweep, load_train_workflow

__all__ = ["CheckpointError", "load_model", "read_card", "save_checkpoint", "TrainConfig", "StateDataset",
           "as_state_dataset", "build_data", "check_data_spec", "train", "final_losses", "DiffusionModule",
           "StepBatches", "train_from_workflow", "train_sweep", "load_train_workflow", "expand_sweep",
           "TrainWorkflow", "TrainResult"]

_LAZY = {"train": "loop", "final_losses": "loop", "DiffusionModule": "module", "StepBatches": "module",
         "train_from_workflow": "run", "train_sweep": "run", "TrainResult": "run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            module = importlib.import_module(f".{_LAZY[name]}", __name__)
        except ImportError as e:
            raise ImportError(f"molfuse.training.{name} needs lightning: pip install 'molfuse[train]' ({e})") from e
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
