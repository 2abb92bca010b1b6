"""What to build for images: one keras-tuner HyperModel over the zoo's image backbones.

Each trial picks a backbone (pretrained ones are fine-tuned with the two-phase
recipe, the others trained from scratch), the input size, the learning rate,
dropout and augmentation strength, and, for pretrained backbones, how many top
blocks phase 2 unfreezes and how much lower its learning rate is. Training is
the recipes' own (``autodl.recipes.fine_tune`` / ``train_from_scratch``), so a
trial trains exactly as ``autodl finetune`` would with those settings.

Example (a search space without data; ``fit`` takes ``ImageDataset`` parts):

>>> import keras_tuner as kt
>>> hm = ImageHyperModel(["a", "b"], architectures=["small_cnn"], image_sizes=[32])
>>> model = hm.build(kt.HyperParameters())
>>> model.output.shape
(None, 2)
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import keras_tuner as kt
from autodl.data.images import ImageDataset, quiet_unknown_length

# Epoch caps per trial: early stopping usually ends sooner; ``max_epochs`` lowers them.
SCRATCH_EPOCHS = 30
HEAD_EPOCHS = 10
FINETUNE_EPOCHS = 10
PATIENCE = 4
BATCH_SIZE = 32
IMAGE_SIZES: tuple[int, ...] = (64, 96, 128, 160)
# Keras Applications need 32x32 at least; smaller images are upsampled to it.
MIN_IMAGE_SIZE = 32


def default_image_sizes(median_side: int | None, *, choices: Sequence[int] = IMAGE_SIZES, most: int = 3) -> list[int]:
    """Input sizes worth searching for images whose shorter side is typically ``median_side``.

    Upsampling adds pixels but no detail, so sizes above the images' own are left
    out; small images are searched at their own size (at least 32).

    >>> default_image_sizes(375)
    [96, 128, 160]
    >>> default_image_sizes(28)
    [32]
    """
    if not median_side:
        return [choices[-1]]
    fitting = [s for s in choices if s <= median_side]
    return fitting[-most:] if fitting else [max(MIN_IMAGE_SIZE, int(median_side))]


def is_pretrained(architecture: str) -> bool:
    from autodl import zoo

    return zoo.get(architecture).card.pretrained is not None


class ImageHyperModel(kt.HyperModel):
    """Search space over zoo image backbones and their training recipe for one image dataset.

    Args:
        classes: the class names (the head's width).
        architectures: zoo image entries to choose among; pretrained weights must be
            in the weights cache (``autodl zoo pull``) or given in ``weights``.
        image_sizes: square input sizes to choose among.
        weights: per architecture, a file or URL for weights not yet cached.
        flip: allow horizontal flips in augmentation (off for digits, documents).
        max_epochs: caps every phase's epochs (the recipes stop early before that).
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        architectures: Sequence[str],
        image_sizes: Sequence[int],
        weights: dict[str, str] | None = None,
        flip: bool = True,
        max_epochs: int = 100,
        metric: str = "accuracy",
    ) -> None:
        super().__init__(name="autodl_image")
        self.classes = list(classes)
        self.architectures = list(architectures)
        self.image_sizes = sorted(int(s) for s in image_sizes)
        self.weights = dict(weights or {})
        self.flip = flip
        self.max_epochs = max_epochs
        self.metric = metric
        # Decoded, resized images per (part, size), kept across trials: decoding is the slow part.
        # Each value holds its part too, so the id in its key cannot be reused by another object.
        self._pipelines: dict[tuple[int, int, bool], tuple[ImageDataset, Any]] = {}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        from autodl import zoo
        from autodl.recipes.finetune import classifier
        from autodl.zoo.weights import load_pretrained

        architecture = hp.Choice("architecture", self.architectures, default=self.architectures[0])
        size = hp.Choice("image_size", self.image_sizes, default=self.image_sizes[-1])
        hp.Float("learning_rate", 1e-4, 3e-3, sampling="log", default=1e-3)
        dropout = hp.Choice("dropout", [0.0, 0.2, 0.4], default=0.2)
        strength = hp.Choice("augmentation", [0.0, 0.15, 0.3, 0.5], default=0.3)
        entry = zoo.get(architecture)
        backbone = entry.build((size, size, 3))
        pretrained = entry.card.pretrained is not None
        if pretrained:
            load_pretrained(backbone, architecture, source=self.weights.get(architecture))
            n_blocks = len(entry.blocks(backbone)) if entry.blocks else 0
            with hp.conditional_scope("architecture", [architecture]):
                # Blocks differ per backbone, so each has its own range under its own condition, and
                # its own name: keras-tuner keys a hyperparameter by name and condition, and one name
                # under two backbones' conditions had its value deleted for the first backbone
                # (ensure_active_values), a KeyError in its next trial.
                hp.Int(f"{architecture}/unfreeze_blocks", 0, min(n_blocks, 4), default=min(2, n_blocks))
                hp.Choice(f"{architecture}/finetune_lr_ratio", [0.03, 0.1, 0.3], default=0.1)
        return classifier(
            backbone, len(self.classes), dropout=dropout, augmentation_strength=strength, flip=self.flip,
            pretrained=pretrained, name=f"autodl_{architecture}",
        )

    def fit(  # type: ignore[override]
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        train_data: ImageDataset,
        valid_data: ImageDataset,
        *,
        callbacks: list[keras.callbacks.Callback] | None = None,
        seed: int = 0,
        **_: Any,
    ) -> dict[str, float]:
        """Trains ``model`` with the recipe; returns the validation score of the weights it ends with."""
        from autodl import zoo
        from autodl.recipes.finetune import FineTuneConfig, fine_tune, train_from_scratch

        values = hp.values
        size = int(values["image_size"])
        train = self.pipeline(train_data, size, training=True, seed=seed)
        valid = self.pipeline(valid_data, size, training=False, seed=seed)
        rate = float(values["learning_rate"])
        with quiet_unknown_length():
            if is_pretrained(values["architecture"]):
                prefix = f"{values['architecture']}/"
                unfreeze = int(values.get(prefix + "unfreeze_blocks", 0))
                head = max(1, min(HEAD_EPOCHS, self.max_epochs))
                config = FineTuneConfig(
                    head_epochs=head, head_learning_rate=rate,
                    finetune_epochs=min(FINETUNE_EPOCHS, self.max_epochs) if unfreeze else 0,
                    finetune_learning_rate=rate * float(values.get(prefix + "finetune_lr_ratio", 0.1)),
                    unfreeze_blocks=unfreeze, patience=PATIENCE, batch_size=BATCH_SIZE,
                )
                result = fine_tune(model, train, valid, blocks=zoo.get(values["architecture"]).blocks, config=config,
                                   callbacks=callbacks)
                epochs = result.epochs
            else:
                phase = train_from_scratch(model, train, valid, epochs=max(1, min(SCRATCH_EPOCHS, self.max_epochs)),
                                           learning_rate=rate, patience=PATIENCE, callbacks=callbacks)
                epochs = phase.epochs
            # Scored after the recipe is done (best epoch restored, BatchNormalization
            # recalibrated): the score belongs to the weights the trial keeps.
            scores = model.evaluate(valid, verbose=0, return_dict=True)
        return {f"val_{self.metric}": float(scores[self.metric]), "epochs": float(epochs)}

    def pipeline(self, part: ImageDataset, size: int, *, training: bool, seed: int = 0) -> Any:
        """The cached tf.data pipeline of ``part`` at ``size`` (one decode per part and size for the whole search)."""
        from autodl.data import make_image_dataset

        key = (id(part), size, training)
        if key not in self._pipelines:
            self._pipelines[key] = (part, make_image_dataset(part, image_size=(size, size), batch_size=BATCH_SIZE,
                                                             training=training, shuffle_seed=seed))
        return self._pipelines[key][1]
