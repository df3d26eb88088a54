"""embedtune: a DVC + Hydra pipeline that tunes a retrieval embedding model to your documents."""
