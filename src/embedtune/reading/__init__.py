"""Reading documents into text, shared by `download` (which checks what it fetched can be read)
and `chunk` (which splits what it reads).

Parts: `readers` (one reader per file type), `bad_documents` (what makes a file unreadable and
the one-line error naming it).
"""
