"""fastmix: fused GPU kernels for mixing-based data augmentation and label-noise training."""

from fastmix._version import __version__
from fastmix._info import info
from fastmix.api.zeta import ZetaMixup, zeta_mixup

__all__ = ["__version__", "info", "zeta_mixup", "ZetaMixup"]
