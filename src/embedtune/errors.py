"""The one error type a stage reports as a single line instead of a traceback.

A leaf: it imports nothing of the package, so every module can raise it.
"""

from __future__ import annotations


class EmbedtuneError(Exception):
    """A problem the user can fix: the message names the file, URL or parameter and the fix."""
