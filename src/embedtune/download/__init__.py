"""Stage `download` (`python -m embedtune.download`): the configured documents into data/raw/.

Parts: `sources` (fetching and rendering each document), `pdf` (text files rendered as PDF).
"""
