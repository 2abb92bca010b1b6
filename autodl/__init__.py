"""autodl: Keras AutoML for tables.

>>> from autodl import AutoModel
>>> AutoModel(target="income").config.tuner
'bayesian'
"""

from typing import Any

from autodl.errors import DataError, RunError, UserError

__version__ = "0.1.0"

__all__ = ["AutoModel", "DataError", "RunError", "UserError", "__version__"]


def __getattr__(name: str) -> Any:
    # AutoModel pulls in TensorFlow; loading it lazily keeps `autodl --help` instant.
    if name == "AutoModel":
        from autodl.api import AutoModel

        return AutoModel
    raise AttributeError(f"module 'autodl' has no attribute {name!r}")
