"""Every technique behind one interface. Importing this package registers all methods.

To add a method, write one module in this folder with a `Method` subclass decorated with `@register_method`:
every module here is imported below, so the CLI, the registry-parametrized tests and the grid pick it up.
"""

import importlib
import pkgutil

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

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "SCHEMES",
    "TECHNIQUES",
    "Method",
    "MethodInfo",
    "Setup",
    "catalogue",
    "get_method",
    "parse_hparams",
    "register_method",
]
