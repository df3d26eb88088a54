"""The generic `Registry`: parts found by importing every module of a package, once; duplicate
names refused; an unknown name is one line naming the parameter and the known names."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import pytest

from embedtune.errors import EmbedtuneError
from embedtune.registry import Registry

INIT = """
from embedtune.registry import Registry

PARTS = Registry("toy.kind", __name__)
IMPORTS = []
"""

MODULE = """
from {package} import PARTS, IMPORTS

IMPORTS.append(__name__)


@PARTS.register("{name}")
class Part:
    pass
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A fresh package on sys.path: alpha.py and beta.py register a part each, helpers.py none.
    Nothing of it is imported except its __init__."""
    package = f"toyparts_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / package
    folder.mkdir()
    (folder / "__init__.py").write_text(INIT)
    for name in ("alpha", "beta"):
        (folder / f"{name}.py").write_text(MODULE.format(package=package, name=name))
    (folder / "helpers.py").write_text(
        f"from {package} import IMPORTS\n\nIMPORTS.append(__name__)\n"
    )
    (folder / "notes.txt").write_text("not a module")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    module = importlib.import_module(package)
    yield module
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        del sys.modules[name]


def test_get_finds_a_part_in_a_module_never_imported(toy):
    assert toy.IMPORTS == []
    part = toy.PARTS.get("beta")
    assert part.__module__ == f"{toy.__name__}.beta"
    assert toy.PARTS.get("alpha").__module__ == f"{toy.__name__}.alpha"


def test_every_module_is_imported_once(toy):
    assert toy.PARTS.names() == ["alpha", "beta"]
    imported = sorted(toy.IMPORTS)
    assert imported == [f"{toy.__name__}.{m}" for m in ("alpha", "beta", "helpers")]
    toy.PARTS.get("alpha")
    toy.PARTS.names()
    assert sorted(toy.IMPORTS) == imported


def test_a_new_module_is_found_without_being_listed(toy):
    folder = Path(toy.__file__).parent
    (folder / "gamma.py").write_text(MODULE.format(package=toy.__name__, name="gamma"))
    importlib.invalidate_caches()
    assert toy.PARTS.names() == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("name", ["delta", "Alpha", "", 3])
def test_unknown_name_names_the_key_and_the_known_names(toy, name):
    with pytest.raises(EmbedtuneError) as info:
        toy.PARTS.get(name)
    assert str(info.value) == f"toy.kind={name!r} is not known (known: alpha, beta)"


def test_absent_name_is_a_missing_key(toy):
    with pytest.raises(EmbedtuneError) as info:
        toy.PARTS.get(None)
    assert str(info.value) == "missing key toy.kind (known: alpha, beta)"


def test_duplicate_registration_refused(toy):
    first = toy.PARTS.get("alpha")

    class Other:
        pass

    with pytest.raises(ValueError, match=r"toy\.kind='alpha' is registered twice"):
        toy.PARTS.register("alpha")(Other)
    assert toy.PARTS.get("alpha") is first
    assert toy.PARTS.register("alpha")(first) is first  # the same part again: harmless


def test_duplicate_name_in_two_modules_refused(toy):
    folder = Path(toy.__file__).parent
    (folder / "alpha_again.py").write_text(MODULE.format(package=toy.__name__, name="alpha"))
    importlib.invalidate_caches()
    with pytest.raises(ValueError, match="registered twice"):
        toy.PARTS.names()


def test_unregister(toy):
    class Extra:
        pass

    assert toy.PARTS.register("extra")(Extra) is Extra
    assert toy.PARTS.names() == ["alpha", "beta", "extra"]
    toy.PARTS.unregister("extra")
    toy.PARTS.unregister("never-registered")
    assert toy.PARTS.names() == ["alpha", "beta"]
    with pytest.raises(EmbedtuneError, match="'extra' is not known"):
        toy.PARTS.get("extra")


def test_registries_are_independent(toy):
    other = Registry("other.kind", toy.__name__)
    assert other.names() == []  # the package's modules register into PARTS only
    with pytest.raises(EmbedtuneError, match=r"^other\.kind='alpha' is not known \(known: \)$"):
        other.get("alpha")


def test_missing_package_fails_loudly():
    with pytest.raises(ModuleNotFoundError):
        Registry("x.kind", "embedtune.no_such_package").names()


def test_project_registries():
    from embedtune.retrieval.metrics import METRICS
    from embedtune.synth.llm.base import BACKENDS
    from embedtune.train.losses import LOSSES
    from embedtune.train.methods.base import METHODS

    assert BACKENDS.names() == ["openai", "transformers"]
    assert METHODS.names() == ["adapter_2layer", "adapter_linear", "full", "nudge"]
    assert LOSSES.names() == ["cached_mnrl", "fusion_margin_mse", "gist", "margin_mse", "mnrl"]
    assert METRICS.names() == ["hit_rate", "mrr", "ndcg", "recall"]
    assert (BACKENDS.key, METHODS.key, LOSSES.key, METRICS.key) == (
        "llm.backend",
        "train.method",
        "train.loss.name",
        "eval.metrics",
    )
    with pytest.raises(EmbedtuneError, match=r"^train\.method='lora' is not known \(known: "):
        METHODS.get("lora")
