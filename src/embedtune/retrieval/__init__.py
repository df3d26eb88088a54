"""Retrieval scoring: ranking with one tie rule, the metrics, the bootstrap, benchmark readers."""
