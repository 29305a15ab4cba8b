"""Every model family through the shared harness (tests/harness.py): output shapes, config round trip,
mixed float16 / bfloat16 policies, ``.keras`` round trip (also in a fresh process) and SavedModel round trip,
at tiny sizes: CNNs (small_cnn, ResNet basic and bottleneck blocks, TextCNN), the BERT backbone and its
three heads, the seq2seq Transformer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import zoo
from tests.harness import (
    Family,
    fresh_process_load_code,
    run_backbone_test,
    run_model_saving_test,
    run_precision_test,
    run_saved_model_test,
    run_serialization_test,
)

BATCH, LENGTH, VOCAB = 3, 12, 100
BERT = {"vocab_size": VOCAB, "num_layers": 2, "hidden_dim": 32, "num_heads": 2, "intermediate_dim": 64,
        "max_sequence_length": 16, "dropout": 0.0}
SEQ2SEQ = {"vocab_size": 40, "num_encoder_layers": 2, "num_decoder_layers": 2, "hidden_dim": 32, "num_heads": 4,
           "intermediate_dim": 64, "max_source_length": 16, "max_target_length": 12, "dropout": 0.0}


def _rng():
    return np.random.default_rng(0)


def _images(shape):
    return lambda: _rng().uniform(0, 255, (BATCH, *shape)).astype("float32")


def _bert_inputs(mask_positions: bool = False):
    def make():
        rng = _rng()
        x = {"token_ids": rng.integers(5, VOCAB, (BATCH, LENGTH)).astype("int32"),
             "segment_ids": np.zeros((BATCH, LENGTH), "int32"),
             "padding_mask": np.ones((BATCH, LENGTH), "int32")}
        x["padding_mask"][0, 8:] = 0  # one padded row
        if mask_positions:
            x["mask_positions"] = np.array([[1, 4]] * BATCH, "int32")
        return x
    return make


def _seq2seq_inputs():
    rng = _rng()
    src, tgt = rng.integers(5, 40, (BATCH, 7)).astype("int32"), rng.integers(5, 40, (BATCH, 5)).astype("int32")
    return {"encoder_token_ids": src, "encoder_padding_mask": np.ones_like(src),
            "decoder_token_ids": tgt, "decoder_padding_mask": np.ones_like(tgt)}


def _bert_head(kind: str):
    def build():
        from zoo.models.bert import BertClassifier, BertMaskedLM, BertQuestionAnswerer

        backbone = zoo.build("bert_tiny", **BERT)
        if kind == "classifier":
            return BertClassifier(backbone, num_classes=3)
        return BertMaskedLM(backbone) if kind == "masked_lm" else BertQuestionAnswerer(backbone)
    return build


FAMILIES = [
    Family("small_cnn", lambda: zoo.build("small_cnn", input_shape=(8, 8, 1), num_classes=3, filters=(4, 8),
                                          dense_units=16), _images((8, 8, 1)), {"": (BATCH, 3)}, ("",)),
    Family("resnet18", lambda: zoo.build("resnet18", input_shape=(16, 16, 3), num_classes=5, width=4, stem="small"),
           _images((16, 16, 3)), {"": (BATCH, 5)}, ("",)),
    Family("resnet50", lambda: zoo.build("resnet50", input_shape=(32, 32, 3), num_classes=5, width=4),
           _images((32, 32, 3)), {"": (BATCH, 5)}, ("",)),
    Family("text_cnn", lambda: zoo.build("text_cnn", sequence_length=LENGTH, vocab_size=50, embedding_dim=8,
                                         num_filters=4, num_classes=3),
           lambda: _rng().integers(0, 50, (BATCH, LENGTH)).astype("int32"), {"": (BATCH, 3)}, ("",)),
    Family("bert_backbone", lambda: zoo.build("bert_tiny", **BERT), _bert_inputs(),
           {"sequence_output": (BATCH, LENGTH, 32), "pooled_output": (BATCH, 32)}),
    Family("bert_classifier", _bert_head("classifier"), _bert_inputs(), {"": (BATCH, 3)}, ("",)),
    Family("bert_masked_lm", _bert_head("masked_lm"), _bert_inputs(mask_positions=True), {"": (BATCH, 2, VOCAB)},
           ("",)),
    Family("bert_question_answerer", _bert_head("qa"), _bert_inputs(),
           {"start_logits": (BATCH, LENGTH), "end_logits": (BATCH, LENGTH)}, ("start_logits", "end_logits")),
    Family("seq2seq", lambda: zoo.build("transformer_tiny", **SEQ2SEQ), _seq2seq_inputs, {"": (BATCH, 5, 40)}, ("",)),
]
IDS = [f.name for f in FAMILIES]


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_backbone(family):
    run_backbone_test(family)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_serialization(family):
    run_serialization_test(family)


# The seq2seq model's float16 fit takes 5-7 s on 2 busy cores (float16 kernels are slow on CPU): marked slow.
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f.name == "seq2seq" else f
                                    for f in FAMILIES], ids=IDS)
def test_precision(family, policy):
    run_precision_test(family, policy)


# Found by this harness and left open (see the issue note): calling a BertMaskedLM built under a mixed policy
# eagerly fails in keras-hub's MaskedLMHead (its float32 output bias is added to the half-precision logits:
# "cannot compute AddV2 as input #1 was expected to be a bfloat16 tensor but is a float tensor"); fit,
# evaluate and predict trace a graph and are unaffected (test_precision). Strict: the fix flips this test.
EAGER_BROKEN = {"bert_masked_lm"}


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("family", [
    pytest.param(f, marks=pytest.mark.xfail(strict=True, reason="MaskedLMHead bias dtype in eager calls"))
    if f.name in EAGER_BROKEN else f for f in FAMILIES], ids=IDS)
def test_eager_call_under_mixed_precision(family, policy):
    run_precision_test(family, policy, eager=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_saved_model(family, tmp_path):
    run_saved_model_test(family, str(tmp_path))


@pytest.mark.slow
def test_every_family_saves_and_loads_in_a_fresh_process(tmp_path):
    """The .keras round trip of each family here, then each file loaded by a new interpreter that imports only
    zoo (a registration another test's import provides here would be missing there)."""
    files = [path for family in FAMILIES for path in run_model_saving_test(family, str(tmp_path))]
    proc = subprocess.run([sys.executable, "-c", fresh_process_load_code(), *files], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln.split() for ln in proc.stdout.strip().splitlines()]
    assert [ln[0] for ln in lines] == [f"{name}.keras" for name in IDS]
    assert [ln[1] for ln in lines][4:8] == ["BertBackbone", "BertClassifier", "BertMaskedLM", "BertQuestionAnswerer"]
    assert all(float(ln[2]) == 0.0 for ln in lines), lines  # bit-identical outputs
