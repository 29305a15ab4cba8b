"""The shared model test harness: every model family runs the same checks at tiny sizes, as keras-hub's
``TestCase.run_backbone_test / run_serialization_test / run_precision_test / run_model_saving_test`` do.

A :class:`Family` says how to build one model (under whatever dtype policy is current), what it takes
and what it must give; each ``run_*`` function checks one property and fails with the family's name.
``tests/zoo/test_model_families.py`` runs every function on every family.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Family:
    """One model family at a tiny size: ``build()`` returns a fresh model, ``inputs`` a batch for it, and
    ``shapes`` the output shape of each output (``""`` for a model with one unnamed output)."""

    name: str
    build: Callable[[], Any]
    inputs: Callable[[], Any]
    shapes: dict[str, tuple[int, ...]]
    float32_outputs: tuple[str, ...] = ()  # outputs that stay float32 under a mixed policy (logits)
    saved_model_tolerance: float = 1e-5
    notes: dict[str, Any] = field(default_factory=dict)


def outputs_of(model: Any, inputs: Any) -> dict[str, np.ndarray]:
    """A model's outputs on ``inputs`` (inference mode) as a dict of NumPy arrays."""
    out = model(inputs, training=False)
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return {"": np.asarray(out)}


def run_backbone_test(family: Family) -> dict[str, np.ndarray]:
    """Builds, runs, and gives outputs of the declared shapes, finite, float32 (the default policy)."""
    out = outputs_of(family.build(), family.inputs())
    assert {k: v.shape for k, v in out.items()} == family.shapes, family.name
    for key, value in out.items():
        assert value.dtype == np.float32 and np.isfinite(value).all(), (family.name, key, value.dtype)
    return out


def run_serialization_test(family: Family) -> None:
    """get_config -> from_config rebuilds the same architecture (same config again, same weight shapes), and
    with the weights copied over it computes the same function."""
    import keras

    from zoo.saving import register_serializables

    register_serializables()
    model = family.build()
    config = keras.saving.serialize_keras_object(model)
    again = keras.saving.deserialize_keras_object(copy.deepcopy(config))  # it consumes the dict it reads
    assert keras.saving.serialize_keras_object(again)["config"] == config["config"], family.name
    assert [tuple(w.shape) for w in again.weights] == [tuple(w.shape) for w in model.weights], family.name
    again.set_weights(model.get_weights())
    x = family.inputs()
    for key, value in outputs_of(model, x).items():
        np.testing.assert_allclose(outputs_of(again, x)[key], value, rtol=1e-6, atol=1e-6, err_msg=family.name)


def predicted(model: Any, inputs: Any) -> dict[str, np.ndarray]:
    """A model's outputs through ``model.predict`` (a traced graph, as fit and evaluate run it)."""
    out = model.predict(inputs, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict) else {"": np.asarray(out)}


def run_precision_test(family: Family, policy: str, *, eager: bool = False) -> None:
    """Under a mixed policy: every variable stays float32, the layers compute in the half type, the declared
    logits come out float32, and the outputs follow the float32 model's (same weights) within the half
    type's precision. Run through ``predict`` (the traced graph training and inference use), or with
    ``eager`` through a direct call."""
    import keras

    from zoo.recipes.engine.precision import precision_scope

    reference_model = family.build()
    with precision_scope(policy):
        model = family.build()
    assert keras.config.dtype_policy().name == "float32"  # the scope put the global policy back
    half = policy.removeprefix("mixed_")
    assert all(w.dtype == "float32" for w in model.weights if "float" in str(w.dtype)), family.name
    assert any(getattr(layer, "compute_dtype", None) == half for layer in _layers(model)), family.name
    model.set_weights(reference_model.get_weights())
    x = family.inputs()
    run = outputs_of if eager else predicted
    reference, out = run(reference_model, x), run(model, x)
    for key in family.float32_outputs:
        assert out[key].dtype == np.float32, (family.name, key, out[key].dtype)
    for key, value in out.items():
        value = value.astype(np.float32)
        assert np.isfinite(value).all(), (family.name, key)
        scale = max(1.0, float(np.abs(reference[key]).max()))
        # bfloat16 keeps 8 bits of mantissa, float16 11: a few roundings through a tiny network stay within this.
        tolerance = (0.1 if half == "bfloat16" else 0.02) * scale
        assert float(np.abs(value - reference[key]).max()) < tolerance, (family.name, key, policy)


def _layers(model: Any) -> list[Any]:
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
        stack.extend(getattr(layer, "_layers", []) or [])
    return found


def run_model_saving_test(family: Family, directory: str) -> tuple[str, str]:
    """A ``.keras`` round trip through ``zoo.load`` gives the same outputs; returns the file and an ``.npz`` of
    its inputs and outputs, for the fresh-process load (:func:`fresh_process_load_code`)."""
    import zoo

    model = family.build()
    x = family.inputs()
    path = os.path.join(directory, f"{family.name}.keras")
    model.save(path)
    expected = outputs_of(model, x)
    loaded = outputs_of(zoo.load(path), x)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=family.name)
    arrays = os.path.join(directory, f"{family.name}.npz")
    flat_inputs = x if isinstance(x, dict) else {"": x}
    np.savez(arrays, **{f"in/{k}": v for k, v in flat_inputs.items()}, **{f"out/{k}": v for k, v in expected.items()})
    return path, arrays


def fresh_process_load_code() -> str:
    """Python run in a new interpreter with pairs of (``.keras``, ``.npz``) arguments: each model loads with
    ``zoo.load`` alone (no test module imported first) and gives the saved outputs; prints one line each."""
    return (
        "import sys, numpy as np, zoo\n"
        "args = sys.argv[1:]\n"
        "for path, arrays in zip(args[::2], args[1::2]):\n"
        "    data = np.load(arrays)\n"
        "    x = {k[3:]: data[k] for k in data.files if k.startswith('in/')}\n"
        "    x = x[''] if list(x) == [''] else x\n"
        "    out = zoo.load(path)(x, training=False)\n"
        "    out = {k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict) else {'': np.asarray(out)}\n"
        "    worst = max(float(np.abs(out[k[4:]] - data[k]).max()) for k in data.files if k.startswith('out/'))\n"
        "    print(path.rsplit('/', 1)[-1], type(zoo.load(path)).__name__, worst)\n"
    )


def run_saved_model_test(family: Family, directory: str) -> None:
    """Keras' ``model.export`` SavedModel, loaded with TensorFlow alone, computes what the model computes."""
    import tensorflow as tf

    model = family.build()
    x = family.inputs()
    path = os.path.join(directory, f"{family.name}_saved_model")
    model.export(path, verbose=False)
    loaded = tf.saved_model.load(path)  # kept: its functions reference the variables it owns
    got = loaded.serve(x)
    got = {k: np.asarray(v) for k, v in got.items()} if isinstance(got, dict) else {"": np.asarray(got)}
    for key, value in outputs_of(model, x).items():
        np.testing.assert_allclose(got[key], value, atol=family.saved_model_tolerance * max(1.0, np.abs(value).max()),
                                   rtol=0, err_msg=family.name)
