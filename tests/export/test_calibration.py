"""int8 calibration through LiteRT: which tensors get a range, and what that does to the output."""

from __future__ import annotations

import numpy as np
import pytest


def _masked_attention(seed: int = 0):
    """A softmax over scores masked with -1e9, as attention layers mask padding, then a 2-class head."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    w = tf.constant(rng.normal(scale=0.5, size=(16, 16)), tf.float32)
    head = tf.constant(rng.normal(scale=3.0, size=(16, 2)), tf.float32)

    @tf.function(input_signature=[{"x": tf.TensorSpec([None, 16], tf.float32, name="x"),
                                   "mask": tf.TensorSpec([None, 16], tf.float32, name="mask")}])
    def serve(inputs):
        scores = tf.matmul(inputs["x"], w)
        weights = tf.nn.softmax(tf.where(inputs["mask"] > 0, scores, -1e9))
        return {"probabilities": tf.nn.softmax(tf.matmul(weights, head))}

    x = rng.normal(size=(256, 16)).astype(np.float32)
    mask = (rng.random((256, 16)) < 0.6).astype(np.float32)
    mask[:, 0] = 1.0  # every row attends somewhere
    return serve, {"x": x, "mask": mask}


def _run(flatbuffer: bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    details = {d["name"]: d for d in interpreter.get_input_details()}
    n = len(next(iter(feeds.values())))
    for name, value in feeds.items():
        interpreter.resize_tensor_input(details[name]["index"], [n, value.shape[1]])
    interpreter.allocate_tensors()
    for name, value in feeds.items():
        interpreter.set_tensor(details[name]["index"], value)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("sentinels_float", [True, False])
def test_masking_sentinels_stay_float_in_int8(sentinels_float, monkeypatch):
    from autodl.export import calibration
    from autodl.export.tflite import convert_function

    serve, feeds = _masked_attention()
    if not sentinels_float:  # the rule switched off: one int8 scale spans -1e9 and the real scores
        monkeypatch.setattr(calibration, "SENTINEL_RANGE", np.inf)
    expected = serve(feeds)["probabilities"].numpy()
    int8 = convert_function(serve.get_concrete_function(), "int8", representative=feeds)
    diff = np.abs(_run(int8, feeds) - expected).max()
    if sentinels_float:
        assert diff < 0.1, diff  # measured 0.03
    else:
        assert diff > 0.3, diff  # measured 0.80
