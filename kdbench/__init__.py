"""kdbench: a reproducible benchmark suite for knowledge distillation.

Every technique of the survey taxonomy sits behind one interface (`kdbench.methods`), runs in one training
loop (`kdbench.engine`) and writes one JSON record per run (`kdbench.results`), from which the survey's
tables and figures are rebuilt.

After `import kdbench`, `timm.create_model("cifar_resnet8")` builds kdbench's architectures: they are
registered in timm's registry as soon as timm is imported (now, if it already is), so that importing kdbench
alone (`kdbench --version`) does not pay for importing torch and timm.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

__version__ = "0.1.0"


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when timm is first imported it lets the other finders load it, then imports
    kdbench.models, whose modules register the architectures."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # once; and find_spec below must not come back here
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_timm = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            exec_timm(module)
            importlib.import_module("kdbench.models")

        spec.loader.exec_module = exec_module
        return spec


def _register_models() -> None:
    if "timm" in sys.modules:
        importlib.import_module("kdbench.models")
    elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWithTimm())


_register_models()
