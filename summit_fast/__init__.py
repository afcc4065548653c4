"""summit_fast: dataset-wide activation and influence aggregation for CNNs (a fast Summit)."""

__version__ = "0.1.0"
