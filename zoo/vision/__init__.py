"""Image backbones. Importing this package registers them in the zoo.

Every entry's ``build(input_shape=(H, W, 3))`` returns a ``keras.Model`` from
raw RGB pixels in [0, 255] to pooled features, and ``blocks(model)`` groups its
layers for unfreezing from the top. Pretrained entries load their published
ImageNet weights with ``autodl.zoo.load_pretrained``. The import order is the
registration order: cheapest pretrained first, the from-scratch CNN last.
"""

from autodl.zoo.vision import mobilenet_v3  # noqa: F401
from autodl.zoo.vision import efficientnet  # noqa: F401
from autodl.zoo.vision import resnet_v2  # noqa: F401
from autodl.zoo.vision import convnext  # noqa: F401
from autodl.zoo.vision import small_cnn  # noqa: F401
