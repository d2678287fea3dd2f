"""pytest-exprun: language-model training experiments as pytest tests with statistical evidence."""

__version__ = "0.1.0"
