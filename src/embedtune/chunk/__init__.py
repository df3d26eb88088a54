"""Stage `chunk` (`python -m embedtune.chunk`): data/raw/ split into text nodes, data/chunks/.

Parts: `splitting` (documents into node records with content-derived ids); reading the files is
`embedtune.reading`.
"""
