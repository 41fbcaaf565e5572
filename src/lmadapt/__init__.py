"""lmadapt: adapt pretrained language models to instructions and preferences."""

__version__ = "0.1.0"
