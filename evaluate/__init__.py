"""Command lines that evaluate trained models: ``python -m evaluate.<task>``."""
