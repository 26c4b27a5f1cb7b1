"""salesml: which deals will close, and how much of each SKU each customer buys in the next hours."""

__version__ = "0.1.0"
