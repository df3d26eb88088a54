"""Plug points: one registry per kind of part (training method, LLM backend, loss, metric).

A part is one module inside the registry's package that registers itself with a decorator:

    METHODS = Registry("train.method", "embedtune.train.methods")

    @METHODS.register("adapter_linear")
    class LinearMethod: ...

`get(name)` imports every module of the package once, so a new module is found without being
listed anywhere; an unknown name is an `EmbedtuneError` that names the parameter and the choices.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from embedtune.errors import EmbedtuneError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str, package: str):
        self.key = key  # the parameter that names a part, for error messages
        self.package = package
        self._parts: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(part: T) -> T:
            known = self._parts.get(name)
            if known is not None and known is not part:
                raise ValueError(f"{self.key}={name!r} is registered twice")
            self._parts[name] = part
            return part

        return add

    def unregister(self, name: str) -> None:
        self._parts.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        self._discovered = True

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._parts)

    def get(self, name: object) -> T:
        self._discover()
        if name is None:
            raise EmbedtuneError(f"missing key {self.key} (known: {', '.join(self.names())})")
        if not isinstance(name, str) or name not in self._parts:
            raise EmbedtuneError(
                f"{self.key}={name!r} is not known (known: {', '.join(self.names())})"
            )
        return self._parts[name]
