"""mergetui: a terminal workbench for merging large language models."""

__version__ = "0.1.0"
