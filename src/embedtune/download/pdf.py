"""Render text into a PDF that is byte-identical on every run (fixed dates and document id)."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone

from fpdf import FPDF

# The core PDF fonts only cover Latin-1; typographic quotes and dashes become their ASCII cousins.
_ASCII_FOR = str.maketrans(
    {"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "--", "…": "..."}
)
_FIXED_DATE = datetime(2000, 1, 1, tzinfo=timezone.utc)


def to_latin1(text: str) -> str:
    text = unicodedata.normalize("NFKC", text.translate(_ASCII_FOR))
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(title: str, sections: list[tuple[str, str]]) -> bytes:
    """Return the bytes of a PDF with a title page heading and one section per (heading, body)."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_title(to_latin1(title))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(0, 10, to_latin1(title), new_x="LMARGIN", new_y="NEXT")
    for heading, body in sections:
        pdf.set_font("Helvetica", "B", 13)
        pdf.multi_cell(0, 8, to_latin1(heading), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(0, 5, to_latin1(body), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    return bytes(pdf.output())
