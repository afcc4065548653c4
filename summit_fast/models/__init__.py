"""Bundled models, each with a ``SUMMARY_LAYERS`` preset for :func:`summit_fast.aggregate`."""

from .digits import DigitsCNN, digits_cnn
from .inception_v1 import InceptionV1, inception_v1

__all__ = ["DigitsCNN", "InceptionV1", "digits_cnn", "inception_v1"]
