"""The edge path for a table with a MiniLM text column: WordPiece in the runner, the encoder in LiteRT.

Needs the ``text`` extra (keras-hub, tensorflow-text and the bundled MiniLM weights);
skipped without it. One small fit (60 short reviews, one epoch) is shared by the module.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras_hub")

from autodl.zoo.text import minilm  # noqa: E402

pytestmark = pytest.mark.skipif(not minilm.pretrained_available(), reason=str(minilm.unavailable_reason()))

TRICKY = [
    "Héllo, WORLD!! café naïve Ångström",
    "",
    "   \t ",
    "北京欢迎你 and 東京タワー 서울",
    "emoji 😀👍🏽 ok❤️ family👨‍👩‍👧 zero\u200bwidth soft\u00adhyphen",
    "Straße ǆ ﬁne Ⅻ ① Ａｂｃ İstanbul ΣΑΣ",  # case folding and NFKC compatibility forms
    "a\u00a0b no-break space, tab\tnew\nline\r\x00ctrl",
    "$100 ^_^ `tick` ~tilde| {brace} [PAD] [CLS] <b>tag</b> e-mail@x.org",
    "…«quotes»— dash ¿qué? ¡sí!",
    "qwzxv blorptastic antidisestablishmentarianism floccinaucinihilipilification",
    "я" * 50,  # 100 UTF-8 bytes: still split into word pieces
    "я" * 51,  # 102 bytes: one [UNK], as tensorflow-text's FastWordpieceTokenizer does
    "x" * 100 + " " + "y" * 101,
    "ᄀ\u115f hangul\u3164filler",
    "word " * 300,  # truncated to [CLS] + 126 pieces + [SEP]
]


@pytest.fixture(scope="module")
def bert_tokens():
    import keras

    minilm.register_layers()
    layer_class = keras.saving.get_registered_object("autodl>BertTokens")
    return layer_class(vocabulary=minilm.vocabulary(), sequence_length=128, name="tokenize")


def test_runner_wordpiece_matches_the_bert_tokens_layer(bert_tokens):
    import keras
    import tensorflow as tf

    from autodl.edge import autodl_edge
    from autodl.export.graph import wordpiece_params

    params = json.loads(json.dumps(wordpiece_params(bert_tokens)))  # as the runner reads it from schema.json
    assert params["sequence_length"] == 128 and params["lowercase"] and params["strip_accents"]
    want = {k: keras.ops.convert_to_numpy(v) for k, v in bert_tokens(tf.constant(TRICKY)).items()}
    got = autodl_edge.wordpiece(TRICKY, params)
    for i, text in enumerate(TRICKY):
        assert got["token_ids"][i].tolist() == want["token_ids"][i].tolist(), repr(text)
        assert got["padding_mask"][i].tolist() == want["padding_mask"][i].astype(int).tolist(), repr(text)
    assert got["token_ids"].dtype == np.int32 and got["padding_mask"].dtype == np.int32
    unk, cls, sep = params["unk_id"], params["cls_id"], params["sep_id"]
    # The cases the comparison is meant to cover do occur: an empty text, unknown words, truncation.
    assert got["token_ids"][1, :3].tolist() == [cls, sep, 0]
    assert unk in got["token_ids"][4] and got["token_ids"][11].tolist()[:3] == [cls, unk, sep]
    assert unk not in got["token_ids"][10]
    assert got["padding_mask"][-1].all() and got["token_ids"][-1, -1] == sep


def _reviews(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    good = ["lovely", "great", "wonderful", "brilliant", "superb", "touching", "fun", "charming"]
    bad = ["boring", "terrible", "awful", "dull", "poor", "weak", "tedious", "bland"]
    nouns = ["film", "story", "acting", "cast", "plot", "ending", "music", "café scene"]
    rows = []
    for i in range(n):
        words = good if i % 2 else bad
        rows.append({
            "review": f"The {rng.choice(nouns)} was {rng.choice(words)} and the {rng.choice(nouns)} "
                      f"{rng.choice(['really', 'truly', 'quite'])} {rng.choice(words)}!",
            "label": "yes" if i % 2 else "no",
        })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    """One MiniLM fit, exported with float32 and int8 (the calibrated path); dynamic and float16
    convert the same graph without calibration (measured, not repeated here: each MiniLM
    conversion takes 7-30 s)."""
    from autodl.api import AutoModel
    from autodl.export.pipeline import ExportOptions, export_run

    tmp = tmp_path_factory.mktemp("edge_text")
    csv = tmp / "reviews.csv"
    _reviews().to_csv(csv, index=False)
    run = tmp / "run"
    # The MLP head, for which the int8 bound below was measured (0.05); a linear head on one epoch's
    # MiniLM embeddings ends near 0.2.
    AutoModel(target="label", models=["minilm", "mlp"], max_trials=1, max_epochs=1, out=run, verbosity=0).fit(str(csv))
    report = export_run(run, ExportOptions(formats=("tflite",), quantize="int8"))
    return run, csv, report


def test_split_replaces_the_tokenizer_with_one_wordpiece_step(text_export):
    from autodl.api import AutoModel
    from autodl.export.graph import split_for_edge

    run, _, report = text_export
    edge = split_for_edge(AutoModel.load(run).model)
    assert [(s.input, s.op, s.output, s.dtype) for s in edge.host_steps] == [
        ("review__token_ids", "wordpiece", "token_ids", "int32"),
        ("review__padding_mask", "wordpiece", "padding_mask", "int32")]
    assert edge.raw_columns == []
    encoder = edge.model.get_layer("review_minilm")
    assert "tokenize" not in {layer.name for layer in encoder.layers}
    assert "bert_trunk" in {layer.name for layer in encoder.layers}
    schema = json.loads((Path(report["tflite"]["path"]) / "schema.json").read_text())
    ids, mask = schema["inputs"]["review__token_ids"], schema["inputs"]["review__padding_mask"]
    assert len(ids["params"]["vocabulary"]) == 30_522
    assert mask["params"] == {"shared_with": "review__token_ids"}  # the vocabulary is written once
    assert schema["columns_read"] == ["review"]


def test_minilm_variants_agree_with_keras(text_export):
    from autodl.api import AutoModel
    from autodl.edge.autodl_edge import EdgeModel, read_csv

    run, csv, report = text_export
    variants = report["tflite"]["variants"]
    assert set(variants) == {"float32", "int8"}
    assert variants["float32"]["label_agreement"] == 1.0
    assert variants["float32"]["max_abs_diff"] <= 1e-4
    # One epoch on 60 rows leaves probabilities near 0.5, where label agreement is noise: the
    # output difference is the check (measured for int8: 0.05, 0.07 before masking sentinels stayed
    # float; 0.005 for dynamic weights).
    assert variants["int8"]["max_abs_diff"] <= 0.2
    assert variants["int8"]["size_bytes"] < variants["float32"]["size_bytes"] / 3
    assert 80e6 < variants["float32"]["size_bytes"] < 100e6
    for v in variants.values():
        assert v["latency_ms"] > 0 and v["throughput_rows_per_s"] > 0 and "accuracy" in v
    # All rows (training ones too) through the bundle's runner, against the Keras model.
    model = EdgeModel(report["tflite"]["path"], "float32")
    output = model.predict_output(read_csv(csv, model.schema["missing_markers"]))
    expected = AutoModel.load(run).predict_output(pd.read_csv(csv))
    assert (output.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(output, expected, atol=1e-4)


def test_runner_tokenizes_without_tensorflow(text_export, tmp_path):
    from tests.export.test_edge import _litert_only_venv

    run, csv, report = text_export
    python = _litert_only_venv(tmp_path / "venv")
    bundle = Path(report["tflite"]["path"])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = tmp_path / "edge.csv"
    done = subprocess.run([python, str(bundle / "autodl_edge.py"), str(bundle), str(csv), "-o", str(out),
                           "--variant", "float32"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from autodl.api import AutoModel

    expected = AutoModel.load(run).predict_output(pd.read_csv(csv))
    got = pd.read_csv(out)
    np.testing.assert_allclose(got[["proba_no", "proba_yes"]].to_numpy(), expected, atol=1e-4)
