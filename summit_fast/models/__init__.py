"""Bundled models, each with a ``SUMMARY_LAYERS`` preset for :func:`summit_fast.aggregate`."""

from .digits import DigitsCNN, digits_cnn
from .inception_v1 import InceptionV1, inception_v1
from .mobilenet_v2 import MobileNetV2, mobilenet_v2
from .resnet import ResNet, resnet18, resnet50
from .vgg import VGG, vgg16

__all__ = ["DigitsCNN", "InceptionV1", "MobileNetV2", "ResNet", "VGG", "digits_cnn", "inception_v1", "mobilenet_v2",
           "resnet18", "resnet50", "vgg16"]
