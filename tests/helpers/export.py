"""Inputs of the export tests."""

# The card fields `save_exported` writes into the exported folder's README.
FIELDS = {"language": ["en"], "model_name": "test", "base_model": None, "tags": ["embedtune"]}
