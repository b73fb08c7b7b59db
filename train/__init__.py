"""Command lines that train the papers' models: ``python -m train.<model>``."""
