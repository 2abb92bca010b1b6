"""Tabular architectures. Importing this package registers them in the zoo.

The import order is the registration order, which is the order the search
tries architectures in (its first entry's default configuration comes first).
"""

from autodl.zoo.tabular import mlp_plr  # noqa: F401  (first: the search's default architecture)
from autodl.zoo.tabular import mlp  # noqa: F401
from autodl.zoo.tabular import resnet  # noqa: F401
from autodl.zoo.tabular import ft_transformer  # noqa: F401
from autodl.zoo.tabular import linear  # noqa: F401  (searched by default only as the head of text-only tables)
