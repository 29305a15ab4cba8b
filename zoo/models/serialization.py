"""One ``get_config`` / ``from_config`` for Keras models described by a frozen config dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras


class DataclassConfigMixin:
    """For a ``keras.Model`` subclass that keeps its config dataclass in ``self.config`` and whose
    ``__init__`` takes the dataclass fields (minus ``name``) plus ``name``, ``trainable`` and ``dtype``."""

    def get_config(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "name"}
        out.update({"name": self.name, "trainable": self.trainable,
                    "dtype": keras.dtype_policies.serialize(self.dtype_policy)})
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = dict(config)
        if "dtype" in config and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)
