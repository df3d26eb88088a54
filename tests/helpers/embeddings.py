"""A small split to embed with the real offline model."""

DATASET = {
    "queries": {
        "q-for": "How does a for loop go over the items of a list?",
        "q-raise": "How do I signal an error with an exception?",
        "q-import": "How do I load another module?",
    },
    "corpus": {
        "c-raise": "The raise statement raises an exception, optionally with a cause.",
        "c-for": "The for statement iterates over the elements of a sequence such as a list.",
        "c-import": "The import statement finds a module, loads it and binds it to a name.",
        "c-pass": "pass is a null operation; nothing happens when it is executed.",
    },
    "relevant_docs": {"q-for": ["c-for"], "q-raise": ["c-raise"], "q-import": ["c-import"]},
    "mode": "text",
}
