"""kdrun: a config-driven experiment runner for knowledge-distillation research."""

__version__ = "0.1.0"
