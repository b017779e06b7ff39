"""NNI model spaces over the ResNet family: the only NNI importers in search_spaces."""

from .resnet_spaces import DepthResNet, ScopedResNet50

__all__ = ["DepthResNet", "ScopedResNet50"]
