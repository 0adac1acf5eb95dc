"""byoc_torch's graph-IR extension: the ``torchop`` operator and its type relation.

The folder is named ``relay_ext`` by the product's design card, after TVM's first graph IR,
Relay. Relay was removed from TVM in v0.20 and no pip-installable TVM has it; its successor,
Relax, is the graph IR here. So ``torchop`` is registered as the Relax operator
``relax.torchop`` and its type relation is the op attribute ``FInferType``
(see :mod:`relay_ext.torchop`).
"""

from . import script  # noqa: F401  (R.torchop in TVMScript)
from .torchop import *  # noqa: F403  (the public names, listed once: torchop.__all__)
from .torchop import __all__  # noqa: F401
