"""Words of a text: the one tokenisation of the filters that count shared words (`synth`'s
copied-run filter, `mine`'s overlap filter), so both stages count the same words."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The text's runs of word characters, case-folded."""
    return _WORD.findall(text.casefold())
