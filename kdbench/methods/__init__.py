"""Every technique behind one interface. Importing this package registers all methods.

To add a method: write one module here with a `Method` subclass decorated with `@register_method`, and import
it below; the CLI, the registry-parametrized tests and the grid pick it up from the registry.
"""

from kdbench.methods import attention, feature, reference, response  # noqa: F401  (registration)
from kdbench.methods.base import (
    METHODS,
    SCHEMES,
    TECHNIQUES,
    Method,
    MethodInfo,
    Setup,
    catalogue,
    get_method,
    parse_hparams,
    register_method,
)

__all__ = [
    "METHODS", "SCHEMES", "TECHNIQUES", "Method", "MethodInfo", "Setup", "catalogue", "get_method",
    "parse_hparams", "register_method",
]
