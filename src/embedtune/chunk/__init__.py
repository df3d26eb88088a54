"""Stage `chunk` (`python -m embedtune.chunk`): data/raw/ split into text nodes, data/chunks/.

Parts: `readers` (one reader per file type), `bad_documents` (what makes a file unreadable and
the one-line error naming it).
"""
