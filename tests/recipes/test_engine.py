"""The training engine: optimizers, schedules, strategies, precision, callbacks, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import ConfigError, DeviceError, UnknownNameError
from zoo.optimizers import WarmupDecay
from zoo.recipes.engine.optim import OptimizerConfig, ScheduleConfig, build_optimizer, build_schedule
from zoo.recipes.engine.precision import precision_scope
from zoo.recipes.engine.run import train
from zoo.recipes.engine.strategy import build_strategy

FAST = {"train.tensorboard": False, "train.checkpoint_every_epoch": False}


def _lr(schedule, step):
    return float(schedule(step))


def test_warmup_then_linear_and_cosine_decay():
    lin = WarmupDecay(1.0, "linear", warmup_steps=10, total_steps=110, alpha=0.0)
    assert _lr(lin, 0) == pytest.approx(0.1)
    assert _lr(lin, 9) == pytest.approx(1.0)
    assert _lr(lin, 10) == pytest.approx(1.0)
    assert _lr(lin, 60) == pytest.approx(0.5)
    assert _lr(lin, 110) == pytest.approx(0.0, abs=1e-7)
    cos = WarmupDecay(2.0, "cosine", warmup_steps=0, total_steps=100, alpha=0.1)
    assert _lr(cos, 0) == pytest.approx(2.0)
    assert _lr(cos, 50) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert _lr(cos, 100) == pytest.approx(0.2)
    step = WarmupDecay(1.0, "step", boundaries=(20, 40), gamma=0.1, total_steps=50)
    assert [_lr(step, s) for s in (0, 19, 20, 39, 40)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    # The Transformer paper's schedule: linear warm-up, then peak * sqrt(warmup / step).
    rsqrt = WarmupDecay(1.0, "rsqrt", warmup_steps=100, total_steps=10_000)
    assert _lr(rsqrt, 49) == pytest.approx(0.5)
    assert [_lr(rsqrt, s - 1) for s in (100, 400, 10_000)] == pytest.approx([1.0, 0.5, 0.1])


def test_schedule_from_config_converts_epochs_to_steps():
    opt = OptimizerConfig(name="sgd", learning_rate=0.4)
    assert build_schedule(opt, ScheduleConfig(), 10, 5) == 0.4
    sched = build_schedule(opt, ScheduleConfig(name="step", step_epochs=(2, 4)), 10, 5)
    assert sched.boundaries == (20, 40) and _lr(sched, 25) == pytest.approx(0.04)
    warm = build_schedule(opt, ScheduleConfig(name="cosine", warmup_epochs=1), 10, 5)
    assert warm.warmup_steps == 10 and warm.total_steps == 50
    with pytest.raises(ConfigError, match="covers the whole run"):
        build_schedule(opt, ScheduleConfig(name="linear", warmup_epochs=5), 10, 5)
    with pytest.raises(ConfigError, match="needs step_epochs"):
        ScheduleConfig(name="step")


def test_schedule_survives_a_keras_file(tmp_path):
    model = zoo.build("small_cnn", input_shape=(8, 8, 1), filters=(4,), dense_units=8)
    model.compile(optimizer=build_optimizer(OptimizerConfig(name="adamw"), WarmupDecay(0.01, "cosine", 5, 50)),
                  loss="mse")
    model.save(tmp_path / "m.keras")
    again = zoo.load(str(tmp_path / "m.keras"))
    lr = again.optimizer.learning_rate if not hasattr(again.optimizer, "_learning_rate") else \
        again.optimizer._learning_rate
    assert isinstance(lr, WarmupDecay) and lr.get_config() == WarmupDecay(0.01, "cosine", 5, 50).get_config()


CLASSES = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adam": "FusedAdam", "adamw": "FusedAdamW",
           "rmsprop": "RMSprop", "adamax": "Adamax", "adagrad": "Adagrad", "adadelta": "Adadelta", "nadam": "Nadam",
           "lamb": "Lamb", "lion": "Lion", "ftrl": "Ftrl", "adafactor": "Adafactor", "muon": "Muon",
           "schedule_free_adamw": "ScheduleFreeAdamW"}
# Rates at which 40 steps on the tiny problem below are enough (Adadelta and Adafactor scale their own steps).
RATES = {"adadelta": 1.0, "adagrad": 0.3, "ftrl": 0.3, "lion": 0.03, "adafactor": 0.1, "sgd": 0.1, "muon": 0.2}


def test_every_keras_optimizer_is_a_choice_with_its_own_hyper_parameters():
    """The config's optimizer table is the installed Keras: every optimizer class is a choice, and each
    choice's hyper-parameters are exactly its class's own keyword arguments."""
    import inspect

    from zoo.recipes.engine.config import HYPERPARAMETERS, OPTIMIZERS
    from zoo.recipes.engine.optim import KERAS_CLASSES

    assert set(CLASSES) == set(OPTIMIZERS)
    shipped = {n for n in dir(keras.optimizers) if isinstance(getattr(keras.optimizers, n), type)
               and issubclass(getattr(keras.optimizers, n), keras.optimizers.Optimizer)}
    wrappers = {"Optimizer", "LossScaleOptimizer", "MultiOptimizer"}  # base class and wrappers of others
    assert shipped - wrappers == set(KERAS_CLASSES.values()) | {"SGD", "Adam", "AdamW"}
    # What every Keras optimizer takes (the base class's own keyword arguments; Optimizer.__init__ on the
    # TensorFlow backend is *args, **kwargs, so they are listed).
    base = {"self", "kwargs", "learning_rate", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
            "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps", "name"}
    for name, cls in {**KERAS_CLASSES, "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}.items():
        own = set(inspect.signature(getattr(keras.optimizers, cls).__init__).parameters) - base
        assert set(HYPERPARAMETERS[name]) == own, (name, own)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_optimizer_builds_and_trains_a_tiny_model(name):
    kwargs = {"epsilon": 1e-2} if name == "adadelta" else {}
    opt = build_optimizer(OptimizerConfig(name=name, learning_rate=RATES.get(name, 0.05), global_clipnorm=10.0,
                                          **kwargs))
    assert type(opt).__name__ == CLASSES[name]
    if name in ("momentum", "nesterov"):
        assert opt.momentum == pytest.approx(0.9) and opt.nesterov == (name == "nesterov")
    if name in ("adamw", "lamb"):
        assert opt.weight_decay == pytest.approx(0.01)
    assert opt.global_clipnorm == 10.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 1.5], [-1.0, 1.0]], "float32") + 0.3).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=opt, loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, shuffle=False)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first, name


def test_optimizer_hyper_parameters_are_checked_and_passed():
    from zoo.config import apply_overrides

    opt = build_optimizer(OptimizerConfig(name="adagrad", options={"initial_accumulator_value": 0.5}))
    assert opt.initial_accumulator_value == pytest.approx(0.5)
    lion = build_optimizer(OptimizerConfig(name="lion"))
    assert lion.beta_2 == pytest.approx(0.99)  # Lion's own default, not Adam's 0.999
    assert build_optimizer(OptimizerConfig(name="lion", beta_2=0.95)).beta_2 == pytest.approx(0.95)
    cfg = apply_overrides(OptimizerConfig(), {"name": "ftrl", "options.l1_regularization_strength": 0.01,
                                              "options.beta": 0.5})
    assert cfg.options == {"l1_regularization_strength": 0.01, "beta": 0.5}
    assert build_optimizer(cfg).l1_regularization_strength == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="epsilon=0.001 does not apply to the lion optimizer; its hyper-parameters "
                                          "are: beta_1, beta_2"):
        OptimizerConfig(name="lion", epsilon=1e-3)
    with pytest.raises(ConfigError, match="options.initial_acumulator_value is not a hyper-parameter of the adagrad "
                                          "optimizer; did you mean 'initial_accumulator_value'"):
        OptimizerConfig(name="adagrad", options={"initial_acumulator_value": 0.1})
    with pytest.raises(ConfigError, match="set train.optimizer.beta_1 instead"):
        OptimizerConfig(name="adam", options={"beta_1": 0.8})


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_adam_equals_keras_adam(name):
    """Same numbers as Keras' own update in a graph, for an embedding lookup with a repeated id.

    Keras gets the embedding gradient dense here: on the sparse (IndexedSlices) gradient of a
    lookup with repeated ids, Keras' Adam squares each occurrence's gradient separately (its
    element-wise ``square`` maps over the slices), so v gets a^2 + b^2 instead of (a + b)^2. The
    fused update sums repeated rows first, which is Adam on the true gradient.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(50, 8)).astype("float32"), rng.normal(size=(8,)).astype("float32")]
    results = []
    for fused in (True, False):
        opt = build_optimizer(OptimizerConfig(name=name, learning_rate=0.01, weight_decay=0.1, fused=fused),
                              WarmupDecay(0.01, "linear", 2, 10))
        assert type(opt).__name__.startswith("Fused") is fused
        table, bias = keras.Variable(start[0], name="table"), keras.Variable(start[1], name="bias")

        step = _train_step(opt, table, bias, dense=not fused)
        for i in range(6):
            step(tf.constant(i))
        results.append([np.asarray(table), np.asarray(bias)])
    for fused_w, keras_w in zip(*results):
        np.testing.assert_allclose(fused_w, keras_w, rtol=1e-5, atol=1e-6)
    assert not np.allclose(results[0][0], start[0])  # the rows that were looked up moved


def _train_step(opt, table, bias, dense):
    import tensorflow as tf

    @tf.function
    def step(i):
        ids = tf.constant([1, 4, 4, 9]) + i
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(tf.gather(table.value, ids)) * bias.value)
        grads = tape.gradient(loss, [table.value, bias.value])
        assert isinstance(grads[0], tf.IndexedSlices)
        if dense:
            grads = [tf.convert_to_tensor(g) for g in grads]
        opt.apply_gradients(zip(grads, [table, bias]))

    return step


def test_weight_decay_skips_biases():
    # Zero gradients: Adam's step is zero, so only the decoupled decay (lr * wd * w) moves weights.
    opt = build_optimizer(OptimizerConfig(name="adamw", learning_rate=0.1, weight_decay=0.5))
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    bias = keras.Variable(np.ones((2,), "float32"), name="bias")
    opt.apply_gradients([(np.zeros((2, 2), "float32"), kernel), (np.zeros((2,), "float32"), bias)])
    assert np.all(np.asarray(bias) == 1.0)
    np.testing.assert_allclose(np.asarray(kernel), 1.0 - 0.1 * 0.5, rtol=1e-6)


def test_strategy_errors_are_clear(monkeypatch):
    with pytest.raises(UnknownNameError, match="did you mean 'mirrored'"):
        build_strategy("mirored")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DeviceError, match="TF_CONFIG"):
        build_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(DeviceError, match="not a valid cluster spec"):
        build_strategy("multi_worker")
    with pytest.raises(DeviceError, match="not a valid cluster spec"):
        build_strategy("mirrored")
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(DeviceError, match="no TPU found"):
        build_strategy("tpu")
    with pytest.raises(DeviceError, match="device 'cpu:7' does not exist"):
        build_strategy("mirrored", ["cpu:0", "cpu:7"])
    assert build_strategy("mirrored", ["cpu:0", "cpu:1"]).num_replicas_in_sync == 2
    # Named or default devices: one strategy object, so collective keys are never reused across models.
    assert build_strategy("mirrored") is build_strategy("mirrored", ["cpu:0", "cpu:1"])
    assert build_strategy("one_device").num_replicas_in_sync == 1


def test_precision_scope_restores_the_global_policy():
    before = keras.config.dtype_policy().name
    with precision_scope("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    with pytest.raises(UnknownNameError):
        with precision_scope("float8"):
            pass


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
NEOVERSE = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_bfloat16_on_a_cpu_without_bf16_units_warns(caplog):
    from zoo.recipes.engine.precision import cpu_flags, warn_if_slow_bfloat16

    assert cpu_flags(NEOVERSE) == {"fp", "asimd", "sve", "bf16", "i8mm"}
    with caplog.at_level("WARNING"):
        assert warn_if_slow_bfloat16("mixed_bfloat16", {"CPU"}, AVX2_ONLY)
    assert "without bfloat16 units" in caplog.text and "train.precision=float32" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert not warn_if_slow_bfloat16("mixed_bfloat16", {"CPU"}, AVX512_BF16)
        assert not warn_if_slow_bfloat16("mixed_bfloat16", {"CPU"}, NEOVERSE)
        assert not warn_if_slow_bfloat16("mixed_bfloat16", {"CPU", "GPU"}, AVX2_ONLY)
        assert not warn_if_slow_bfloat16("float32", {"CPU"}, AVX2_ONLY)
        assert not warn_if_slow_bfloat16("mixed_bfloat16", {"CPU"}, "")  # unknown CPU: no guess
    assert caplog.text == ""


def test_bfloat16_with_xla_on_cpu_warns(caplog):
    from zoo.recipes.engine.precision import warn_if_xla_bfloat16

    with caplog.at_level("WARNING"):
        assert warn_if_xla_bfloat16("mixed_bfloat16", True, {"CPU"})
    assert "XLA" in caplog.text and "drop --xla" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert not warn_if_xla_bfloat16("mixed_bfloat16", False, {"CPU"})
        assert not warn_if_xla_bfloat16("float32", True, {"CPU"})
        assert not warn_if_xla_bfloat16("mixed_bfloat16", True, {"CPU", "TPU"})
    assert caplog.text == ""


@pytest.mark.slow
@pytest.mark.parametrize("precision,compute", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_trains_with_float32_logits(precision, compute, tmp_path, caplog, monkeypatch):
    from zoo.recipes.engine import precision as precision_module

    flags = precision_module.cpu_flags(AVX2_ONLY)
    monkeypatch.setattr(precision_module, "cpu_flags", lambda cpuinfo=None: flags)
    with caplog.at_level("WARNING"):
        # Narrow convolutions: float16 ones have no fast CPU kernel (the default widths took 84 s, these 16 s).
        result = train("image_classify", str(tmp_path / "run"),
                       {**FAST, "train.precision": precision, "train.epochs": 3, "model.filters": (8, 16)}, verbose=0)
    # The recipe itself warns, on a CPU that (here, by the stub) has no bfloat16 units.
    assert ("without bfloat16 units" in caplog.text) is (precision == "mixed_bfloat16")
    model = result.model
    assert model.get_layer("conv1").compute_dtype == compute
    assert model.get_layer("conv1").variable_dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    assert result.metrics["loss_scaling"] is (precision == "mixed_float16")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is (precision == "mixed_float16")
    losses = [e["loss"] for e in result.metrics["epochs"]]
    assert losses[-1] < losses[0] * 0.5
    assert result.metrics["final"]["test_accuracy"] > 0.85
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_xla_training_matches_accuracy(tmp_path):
    result = train("image_classify", str(tmp_path / "run"), {**FAST, "train.jit_compile": True, "train.epochs": 3},
                   verbose=0)
    assert result.model.jit_compile is True
    assert result.metrics["final"]["test_accuracy"] > 0.85


@pytest.mark.slow
def test_mirrored_two_replicas_equal_default_strategy(tmp_path):
    """Same global batch, same data order: 2 replicas must give the same losses and weights."""
    common = {**FAST, "model.dropout": 0.0, "train.epochs": 2, "train.batch_size": 32,
              "train.optimizer.name": "sgd", "train.optimizer.learning_rate": 0.05}
    single = train("image_classify", str(tmp_path / "one"), common, verbose=0)
    mirrored = train("image_classify", str(tmp_path / "two"),
                     {**common, "train.strategy": "mirrored", "train.devices": ["cpu:0", "cpu:1"]}, verbose=0)
    assert mirrored.metrics["replicas"] == 2 and single.metrics["replicas"] == 1
    for a, b in zip(single.metrics["epochs"], mirrored.metrics["epochs"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    for wa, wb in zip(single.model.weights, mirrored.model.weights):
        np.testing.assert_allclose(np.asarray(wa), np.asarray(wb), atol=1e-5)
    # and it learned something, so the comparison is not between two untrained models
    assert single.metrics["epochs"][-1]["loss"] < single.metrics["epochs"][0]["loss"]


def test_early_stopping_and_run_dir_contents(tmp_path):
    run_dir = tmp_path / "run"
    result = train("image_classify", str(run_dir),
                   {"train.epochs": 6, "train.early_stopping.monitor": "accuracy",
                    "train.early_stopping.mode": "max", "train.early_stopping.min_delta": 1.0,
                    "train.early_stopping.patience": 1}, verbose=0)
    assert result.metrics["epochs_completed"] == 2 and result.metrics["stopped_early"] is True
    names = set(os.listdir(run_dir))
    assert {"config.yaml", "run.json", "metrics.json", "curves.png", "model.keras", "eval_sample.npz",
            "calibration.npz", "checkpoints", "logs"} <= names
    assert "backup" not in names  # removed once the run finished
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["epoch-001.weights.h5", "epoch-002.weights.h5"]
    assert any(f.startswith("events") for _, _, fs in os.walk(run_dir / "logs") for f in fs)
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(zoo.ZooError, match="holds a finished run"):
        train("image_classify", str(run_dir), {"train.epochs": 6}, verbose=0)


def _sigkilled_after_epoch_2(args: list[str]) -> subprocess.CompletedProcess:
    """``python -m zoo.recipes.image_classify ARGS`` in a fresh process that SIGKILLs itself at the end of
    its second epoch (or round of steps), after the engine's checkpoint of it."""
    killer = textwrap.dedent(f"""
        import os, signal, sys
        import keras
        from zoo.recipes import image_classify
        from zoo.recipes.engine import cli as engine

        class KillAfterEpoch2(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    os.kill(os.getpid(), signal.SIGKILL)

        original = engine.run
        engine.run = lambda *a, **k: original(*a, **{{**k, "extra_callbacks": [KillAfterEpoch2()]}})
        sys.exit(image_classify.main({args!r}))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", killer], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_run_resumes_at_the_next_epoch(tmp_path):
    """SIGKILL after epoch 2, restart with the same run dir: training continues at epoch 3."""
    run_dir = str(tmp_path / "run")
    args = ["--run-dir", run_dir, "--epochs", "4", "--quiet", "--set", "train.tensorboard=false"]
    first = _sigkilled_after_epoch_2(args)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    with open(os.path.join(run_dir, "metrics.json")) as fh:
        partial = json.load(fh)
    assert [e["epoch"] for e in partial["epochs"]] == [1, 2]
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))
    second = subprocess.run([sys.executable, "-m", "zoo.recipes.image_classify", *args, "--json"],
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    metrics = json.loads(second.stdout)
    assert metrics["first_epoch_this_process"] == 3
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert [r["epoch"] for r in metrics["resumes"]] == [3]
    assert metrics["epochs_completed"] == 4
    assert os.path.isfile(os.path.join(run_dir, "model.keras"))
    # epochs 1-2 were kept from the killed process, not retrained
    assert metrics["epochs"][0] == partial["epochs"][0]


def _two_workers(code):
    """Run ``code`` as the two workers of a localhost MultiWorkerMirroredStrategy job; each worker's last
    stdout line (JSON) and its stderr."""
    import socket

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs, logs = [], []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
        logs.append(err)
    return outputs, logs


def test_xla_over_mirrored_cpus_is_refused_before_anything_is_written(tmp_path):
    """TensorFlow's XLA cluster cannot reach replica variables on other logical CPUs; say so up front."""
    with pytest.raises(zoo.errors.DeviceError, match="XLA .* cannot compile a step mirrored over 2 CPU devices"):
        train("image_classify", str(tmp_path / "run"), {"train.strategy": "mirrored", "train.jit_compile": True})
    assert not os.path.exists(tmp_path / "run")


def _accumulation_run(batch: int, k: int, strategy) -> tuple[list[np.ndarray], float]:
    """A Dense model (no batch-dependent layers) trained 3 epochs on 256 examples with AdamW and a warm-up
    + linear decay schedule, at ``batch`` per step and an update every ``k`` steps."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 3)) + 0.1).astype("float32")
    steps = 256 // batch
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
        opt_cfg = OptimizerConfig(name="adamw", learning_rate=0.02)
        lr = build_schedule(opt_cfg, ScheduleConfig(name="linear", warmup_epochs=1), steps, 3, k)
        model.compile(optimizer=build_optimizer(opt_cfg, lr, k), loss="mse")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    model.fit(data, epochs=3, steps_per_epoch=steps, verbose=0, shuffle=False)
    return [np.asarray(w) for w in model.weights], float(model.optimizer.iterations)


@pytest.mark.parametrize("strategy", ["default", "one_device"])
def test_gradient_accumulation_equals_the_large_batch(strategy):
    """Batch 8 with 4 accumulation steps = batch 32, to 1e-5; the schedule counts optimizer updates (24 of
    them in both runs), not the 96 micro-batches. Strategies with several replicas are refused."""
    from zoo.recipes.engine.config import TrainConfig

    strat = build_strategy(strategy)
    accumulated, updates_a = _accumulation_run(8, 4, strat)
    large, updates_b = _accumulation_run(32, 1, strat)
    assert updates_a == updates_b == 24
    for a, b in zip(accumulated, large):
        np.testing.assert_allclose(a, b, atol=1e-5)
    lr = build_schedule(OptimizerConfig(learning_rate=0.02), ScheduleConfig(name="linear", warmup_epochs=1), 32, 3, 4)
    assert (lr.warmup_steps, lr.total_steps, lr.accumulation_steps) == (8, 24, 4)
    # After the 8 warm-up updates the rate falls once per update: batches 36..39 are update 9, 40 is update 10.
    assert float(lr(39)) == pytest.approx(float(lr(36))) and float(lr(40)) < float(lr(39))
    with pytest.raises(ConfigError, match="does not work with strategy='mirrored'.*larger global batch_size"):
        TrainConfig(strategy="mirrored", gradient_accumulation_steps=2)


STEP_MODE = ["--set", "train.steps=12", "--set", "train.checkpoint_every_steps=4", "--set",
             "train.validation_every_steps=8", "--set", "train.validation_steps=3", "--set",
             "train.schedule.name=linear", "--set", "train.schedule.warmup_steps=3", "--quiet", "--set",
             "train.tensorboard=false"]


@pytest.mark.slow
def test_step_mode_sigkilled_mid_pass_resumes_to_the_uninterrupted_weights(tmp_path):
    """train.steps: rounds of checkpoint_every_steps steps, validation every validation_every_steps on
    validation_steps batches, warm-up in steps. A SIGKILL at the end of round 2 (step 8, in the middle
    of the first pass over the data, about 40 batches) resumes at that position of the stream and ends with the
    weights of a run never killed (dropout on: the same masks too)."""
    killed_dir, whole_dir = str(tmp_path / "killed"), str(tmp_path / "whole")
    first = _sigkilled_after_epoch_2(["--run-dir", killed_dir, *STEP_MODE])
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]  # the kill landed, mid-run
    with open(os.path.join(killed_dir, "metrics.json")) as fh:
        assert [e["epoch"] for e in json.load(fh)["epochs"]] == [1, 2]
    from zoo.cli import main

    assert main(["train", "image_classify", "--run-dir", killed_dir, *STEP_MODE]) == 0
    assert main(["train", "image_classify", "--run-dir", whole_dir, *STEP_MODE]) == 0
    with open(os.path.join(killed_dir, "metrics.json")) as fh:
        metrics = json.load(fh)
    assert metrics["first_epoch_this_process"] == 3 and [r["epoch"] for r in metrics["resumes"]] == [3]
    assert metrics["steps_completed"] == 12 and [e["step"] for e in metrics["epochs"]] == [4, 8, 12]
    assert [("val_loss" in e) for e in metrics["epochs"]] == [False, True, False]  # every 8 steps
    killed = zoo.load(os.path.join(killed_dir, "model.keras"))
    whole = zoo.load(os.path.join(whole_dir, "model.keras"))
    assert int(killed.optimizer.iterations.numpy()) == int(whole.optimizer.iterations.numpy()) == 12
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(killed.get_weights(), whole.get_weights()))
    # Every round's losses are the uninterrupted run's: the resumed round 3 saw the batches after step 8.
    with open(os.path.join(whole_dir, "metrics.json")) as fh:
        whole_epochs = json.load(fh)["epochs"]
    drop = ("seconds",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in whole_epochs] == [
        {k: v for k, v in e.items() if k not in drop} for e in metrics["epochs"]]


def test_step_mode_settings_are_checked_before_anything_runs():
    from zoo.recipes.engine.config import TrainConfig

    with pytest.raises(ConfigError, match="steps=10 is not a multiple of checkpoint_every_steps=4; use steps=8"):
        TrainConfig(steps=10, checkpoint_every_steps=4)
    with pytest.raises(ConfigError, match="validation_every_steps=6 is not a multiple of checkpoint_every_steps=4"):
        TrainConfig(steps=12, checkpoint_every_steps=4, validation_every_steps=6)
    with pytest.raises(ConfigError, match="apply to step mode; set train.steps too"):
        TrainConfig(checkpoint_every_steps=4)
    assert TrainConfig(steps=5000).round_steps == 1000 and TrainConfig(steps=300).round_steps == 300
    sched = build_schedule(OptimizerConfig(learning_rate=1.0), ScheduleConfig(name="linear", warmup_steps=10),
                           steps_per_epoch=3, epochs=1, total_updates=100)
    # Warm-up over 10 optimizer steps, (step + 1) / 10 of the peak; then linear decay to 0 at step 100.
    assert float(sched(4)) == pytest.approx(0.5) and float(sched(10)) == pytest.approx(1.0)
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="warmup_steps=100 covers the whole run of 100 steps"):
        build_schedule(OptimizerConfig(), ScheduleConfig(name="linear", warmup_steps=100), 3, 1, total_updates=100)


def test_step_mode_on_a_large_dataset_caps_a_warm_up_given_in_epochs(caplog):
    """`zoo train bert_pretrain --set train.steps=100000` on a corpus whose one pass is 3 M steps: the recipe's
    default warm-up of one epoch would outlast the run (and used to refuse it); it warms up over a tenth."""
    import logging

    with caplog.at_level(logging.WARNING):
        sched = build_schedule(OptimizerConfig(learning_rate=1.0), ScheduleConfig(name="linear", warmup_epochs=1.0),
                               steps_per_epoch=3_000_000, epochs=1, total_updates=100_000)
    assert sched.warmup_steps == 10_000 and sched.total_steps == 100_000
    assert any("warming up over 10000 steps (a tenth of the run)" in r.getMessage() for r in caplog.records)
    # A warm-up shorter than the run is kept as given.
    assert build_schedule(OptimizerConfig(), ScheduleConfig(name="linear", warmup_epochs=1.0), 300, 1,
                          total_updates=1000).warmup_steps == 300


@pytest.mark.slow
def test_multi_worker_streamed_input_is_sharded_per_worker_and_resumes_by_skipping(tmp_path):
    """Under multi_worker a streamed corpus is split between the workers (Datasets.sharded_train through
    distribute_datasets_from_function): per-replica batches, disjoint across the workers, a resumed worker
    starts at the batch it had reached; a streamed bert_pretrain job trains on it and says how it shards."""

    lines = [f"line {i} " + " ".join(f"w{(i * 7 + j) % 40}" for j in range(3 + i % 5)) for i in range(400)]
    for f in range(4):
        (tmp_path / f"part-{f}.txt").write_text("\n".join(lines[f::4]) + "\n", encoding="utf-8")
    corpus = str(tmp_path / "part-*.txt")
    code = textwrap.dedent(f"""
        import glob, json, logging
        import tensorflow as tf
        from zoo.data import stream
        from zoo.recipes.engine.run import sharded_input, train
        from zoo.recipes.engine.strategy import build_strategy
        logging.basicConfig(level=logging.INFO)
        strategy = build_strategy("multi_worker")
        files = sorted(glob.glob({corpus!r}))
        fn = lambda shard, size: stream.train_lines(files, 0.0, 7, 16, shard=shard).batch(size)
        def batches(done, steps):
            it = iter(sharded_input(strategy, fn, 8, done))
            return [[t.decode() for r in strategy.experimental_local_results(next(it)) for t in r.numpy()]
                    for _ in range(steps)]
        seen = {{"whole": batches(0, 4), "resumed": batches(2, 2)}}
        r = train("bert_pretrain", {str(tmp_path / "run")!r}, {{
            "data.source": {corpus!r}, "data.streaming": True, "model.preset": "bert_tiny", "model.num_layers": 1,
            "data.sequence_length": 16, "data.vocab_size": 80, "train.batch_size": 8, "train.steps": 4,
            "train.schedule.warmup_steps": 1, "train.validation_steps": 1, "train.tensorboard": False,
            "train.strategy": "multi_worker"}}, verbose=0)
        print(json.dumps({{**seen, "steps": r.metrics["steps_completed"], "replicas": r.metrics["replicas"]}}))
    """)
    outputs, logs = _two_workers(code)
    for index, (out, err) in enumerate(zip(outputs, logs)):
        assert f"input pipeline {index} of 2: its own files of every epoch (4 files, AutoShardPolicy FILE)" in err
        assert all(len(b) == 4 for b in out["whole"])  # per-replica batches: 8 / 2 workers
        assert out["resumed"] == out["whole"][2:]  # resumed after step 2: the batches it had not taken
        assert out["steps"] == 4 and out["replicas"] == 2
    first, second = ({t for b in out["whole"] for t in b} for out in outputs)
    assert len(first) == len(second) == 16 and not first & second and first | second <= set(lines)
