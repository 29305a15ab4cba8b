"""The version policy alone: a pure function of what the manager sees, tested without threads, files or
models (the manager that carries it out is tested in test_serve.py)."""

from __future__ import annotations

import pytest

from zoo.export.serve.lifecycle import Action, Seen, State, next_actions, retry_due

A, L, U, E = State.AVAILABLE, State.LOADING, State.UNLOADING, State.END


def loads(*versions):
    return [Action("load", v) for v in versions]


def unloads(*versions):
    return [Action("unload", v) for v in versions]


def test_new_versions_load_newest_first_and_nothing_retires_before_one_is_available():
    assert next_actions([1], {}) == loads(1)
    assert next_actions([2, 3], {1: Seen(A)}) == loads(3, 2)  # latest {2}: both new ones, the newest first
    assert next_actions([2], {1: Seen(A), 2: Seen(L)}) == []  # the replacement is still loading: keep 1
    assert next_actions([2], {1: Seen(A), 2: Seen(A)}) == unloads(1)  # replaced: retire the old one
    assert next_actions([2], {1: Seen(U), 2: Seen(A)}) == []  # already going; nothing twice
    assert next_actions([2], {1: Seen(E), 2: Seen(A)}) == []


def test_availability_is_preserved_when_the_replacement_fails():
    failed = Seen(E, failed=True)
    assert next_actions([2], {1: Seen(A), 2: failed}) == []  # 1 keeps serving
    assert next_actions([2], {1: Seen(A), 2: Seen(E, failed=True, retry_due=True)}) == loads(2)
    # ...unless the old version's folder is gone: then it goes at once, replaced or not.
    assert next_actions([2], {1: Seen(A, on_disk=False), 2: failed}) == unloads(1)


def test_rollback_by_deleting_the_newest_version_reloads_the_previous_one_first():
    # 2 was deleted from disk: latest {1} now aspires to 1, which was unloaded when 2 came.
    actions = next_actions([1], {1: Seen(E), 2: Seen(A, on_disk=False)})
    assert actions == loads(1) + unloads(2)  # the load comes first: the model is never without a version
    assert next_actions([1], {1: Seen(A), 2: Seen(U, on_disk=False)}) == []


def test_policies_all_and_specific_and_models_with_nothing_aspired():
    assert next_actions([1, 2, 3], {1: Seen(A), 3: Seen(A)}) == loads(2)  # all: every version served
    assert next_actions([2], {1: Seen(A), 2: Seen(A), 3: Seen(A)}) == unloads(1, 3)  # specific {2}
    # Nothing aspired (a specific version not on disk): keep serving what there is, as long as it is there.
    assert next_actions([], {1: Seen(A)}) == []
    assert next_actions([], {1: Seen(A, on_disk=False)}) == unloads(1)


@pytest.mark.parametrize("failures,now,due", [
    (0, 1000.0, False),  # never failed: not a retry
    (1, 109.9, False), (1, 110.0, True),  # first retry 10 s after the first failure
    (2, 119.9, False), (2, 120.0, True),  # then 20 s
    (3, 140.0, True), (4, 180.0, True),  # 40 s, 80 s
    (5, 10**9, False),  # four retries allowed: a fifth failure is final (until the folder changes)
])
def test_retries_wait_twice_as_long_each_time_and_stop(failures, now, due):
    assert retry_due(failures, failed_at=100.0, now=now, max_retries=4, interval=10.0) is due


def test_states_are_the_wire_names():
    assert [s.value for s in State] == ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
    assert f"{State.AVAILABLE}" == "AVAILABLE" and State.END == "END"


def test_sources_say_which_models_to_serve_at_each_poll(tmp_path, caplog):
    """The Source alone (TF Serving's, apart from the manager): a base path is rescanned, so a new export's
    model appears at the next call; a models.config is re-read when it changes, and a broken rewrite keeps
    the models it had (logged); a bad file at start-up is an error."""
    import os

    from zoo.export.serve.source import BasePathSource, ConfigFileError, ConfigFileSource, StaticSource, source_for

    base = tmp_path / "exports"
    (base / "a" / "1").mkdir(parents=True)
    (base / "a" / "1" / "saved_model.pb").write_bytes(b"")
    (base / "b" / "1").mkdir(parents=True)
    (base / "b" / "1" / "model_float32.tflite").write_bytes(b"")  # TFLite only: not served
    source = BasePathSource(str(base))
    assert [c.name for c in source.configs()] == ["a"]
    (base / "c" / "7").mkdir(parents=True)
    (base / "c" / "7" / "saved_model.pb").write_bytes(b"")
    assert [(c.name, c.base_path) for c in source.configs()] == [("a", str(base / "a")), ("c", str(base / "c"))]

    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'a' base_path: 'exports/a' } }")
    source = ConfigFileSource(str(config))
    assert [(c.name, c.base_path) for c in source.configs()] == [("a", str(base / "a"))]
    config.write_text("model_config_list { config { name: 'a' base_path: 'exports/a' } "
                      "config { name: 'c' base_path: 'exports/c' model_version_policy { all {} } } }")
    os.utime(config, (1, 1))  # a different modification time, however fast the rewrite
    assert [(c.name, c.policy) for c in source.configs()] == [("a", "latest"), ("c", "all")]
    config.write_text("model_config_list { config { name: 'a' ")  # cut off mid-write
    os.utime(config, (2, 2))
    with caplog.at_level("ERROR"):
        assert [c.name for c in source.configs()] == ["a", "c"]  # the previous models stay
    assert "keeping the previous model config" in caplog.text
    with pytest.raises(ConfigFileError, match="ModelServerConfig text format"):
        ConfigFileSource(str(config))
    assert StaticSource([]).configs() == [] and isinstance(source_for(base=str(base)), BasePathSource)
    with pytest.raises(ValueError, match="serve one of"):
        source_for(base=str(base), config_file=str(config))
