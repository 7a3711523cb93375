"""fastmix: fused GPU kernels for mixing-based data augmentation and label-noise training."""

from fastmix._version import __version__
from fastmix._info import info
from fastmix.api.zeta import ZetaMixup, zeta_mixup
from fastmix.api.mix import MixParams, cutmix, mixup
from fastmix.api.timm_mixup import FastCollateMixup, Mixup
from fastmix.api.lumix import LUMixLambda, lumix_lambda, lumix_loss
from fastmix.methods.lumix import LUMix, LUMixOutput
from fastmix.api.gmm import GMM2Fit, fit_gmm2, gmm_posterior, label_groups
from fastmix.api.flow import FlowMixParams, FlowMixup, flow_mix, flow_mix_labels
from fastmix.api.lamix import lamix_inputs, lamix_loss, lamix_target
from fastmix.methods.lamix import LaMix, LaMixBatch, LaMixHead
from fastmix.api.balancemix import balancemix_loss
from fastmix.methods.balancemix import BalanceMix, MinoritySampler, manage_labels, minority_sampling_probabilities

__all__ = ["__version__", "info", "zeta_mixup", "ZetaMixup",
           "mixup", "cutmix", "MixParams", "Mixup", "FastCollateMixup",
           "lumix_lambda", "lumix_loss", "LUMixLambda", "LUMix", "LUMixOutput",
           "GMM2Fit", "fit_gmm2", "gmm_posterior", "label_groups",
           "flow_mix", "flow_mix_labels", "FlowMixup", "FlowMixParams",
           "lamix_inputs", "lamix_loss", "lamix_target", "LaMix", "LaMixBatch", "LaMixHead",
           "BalanceMix", "MinoritySampler", "balancemix_loss",
           "manage_labels", "minority_sampling_probabilities"]
