"""Training methods, one module each, with how their tuned models are saved and loaded.

See `base.py` for the interface and how to add a method.
"""
