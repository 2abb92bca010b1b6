"""Any BERT-family keras-hub preset as a text encoder: a tiny KerasHub preset the test saves, and a Hugging Face checkpoint folder."""

from __future__ import annotations

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("tensorflow_text")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "film", "plot", "was", "and", "it", "very",
         "great", "lovely", "excellent", "awful", "terrible", "boring", "##s", "."]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("presets") / "tiny-bert"
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=64)
    backbone.save_to_preset(str(folder))
    keras_hub.models.BertTokenizer(vocabulary=VOCAB).save_to_preset(str(folder))
    return folder


def test_a_local_preset_is_searched_saved_and_reloaded(preset, tmp_path) -> None:
    from autodl import AutoModel
    from autodl.zoo import get
    from tests.test_text_fit import make_text_table

    df = make_text_table(120)
    model = AutoModel(target="sentiment", models=[f"hub:{preset}"], max_trials=1, max_epochs=2, out=tmp_path / "run",
                      verbosity=0).fit(df)
    assert model.leaderboard()["architecture"].tolist() == ["linear+hub_tiny_bert"]  # a text-only table's first head
    assert get("hub_tiny_bert").card.fine_tuning is not None  # fine-tuned with the pretrained-encoder recipe
    again = AutoModel.load(tmp_path / "run")
    assert (again.predict(df.head(20)) == model.predict(df.head(20))).all()


def test_a_missing_preset_folder_is_a_one_line_error(tmp_path, capsys) -> None:
    from autodl.cli import main

    code = main(["fit", "x.csv", "--target", "y", "--models", "hub:./no/such/preset", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "keras-hub preset folder './no/such/preset' does not exist" in err


def test_a_hugging_face_checkpoint_folder_is_a_preset(tmp_path) -> None:
    """A folder as Hugging Face writes it (config.json, model.safetensors, vocab.txt) goes through keras-hub's converter."""
    import keras
    import tensorflow as tf

    from autodl.zoo import get
    from autodl.zoo.text import minilm
    from autodl.zoo.text.hub import register_preset

    if not minilm.pretrained_available():
        pytest.skip(str(minilm.unavailable_reason()))
    folder = tmp_path / "all-MiniLM-L6-v2"
    folder.mkdir()
    for file in ("config.json", "model.safetensors", "vocab.txt"):  # no KerasHub metadata.json or tokenizer.json
        (folder / file).symlink_to(minilm.preset_dir() / file)
    name = register_preset(f"hub:{folder}")
    assert name == "hub_all_MiniLM_L6_v2"
    text = keras.Input(shape=(), dtype="string")
    from_folder = keras.Model(text, get(name).build(None, text))
    texts = tf.constant(["a lovely film", "the plot was awful and boring", ""])
    expected = minilm.encoder(minilm.word_piece_length())(texts).numpy()  # the zoo's own MiniLM entry
    np.testing.assert_allclose(from_folder(texts).numpy(), expected, atol=1e-5)
