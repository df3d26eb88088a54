"""Where model weights come from: a hub name, a local folder, or a folder a Python package ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from embedtune.errors import EmbedtuneError

PACKAGE_PREFIX = "pkg:"


def resolve_model(ref: str, key: str) -> str:
    """Turn `pkg:<module>[/<sub/path>]` into the folder inside that installed package.

    Any other value is returned as given (a hub id or a local path). `key` names the parameter
    in error messages. The package is located without importing it: some model packages import
    tools that are not installed.
    """
    if not ref.startswith(PACKAGE_PREFIX):
        return ref
    module, _, sub = ref[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedtuneError(
            f"{key}={ref}: Python package {module!r} is not installed "
            "(`make setup` installs the offline models)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not folder.exists():
        raise EmbedtuneError(f"{key}={ref}: {folder} does not exist")
    return str(folder)


def pick_device(requested: str, key: str) -> str:
    """`auto` means CUDA when present; asking for CUDA without it is an error that names `key`."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise EmbedtuneError(
            f"{key}=cuda but this machine has no CUDA GPU; "
            "run `dvc exp run -S experiment=cpu` for the CPU preset"
        )
    return requested


def encoder_dtype(requested: str, device: str):
    """The torch dtype an embedding model runs in: `auto` is float16 on CUDA, float32 on CPU."""
    import torch

    if requested == "auto":
        requested = "float16" if device == "cuda" else "float32"
    return getattr(torch, requested)
