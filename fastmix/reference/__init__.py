"""Pure-PyTorch references, written from the papers: the oracle every kernel is tested against.

The papers, cited once here and in the README; elsewhere the code names them by method and equation:

- Flow-Mixup: J. Chen, H. Yu, R. Feng, D. Z. Chen, J. Wu, "Flow-Mixup: Classifying Multi-labeled Medical Images with
  Corrupted Labels", 2021, arXiv:2102.08148.
- BalanceMix: H. Song, M. Kim, J.-G. Lee, "Toward Robustness in Multi-label Classification: A Data Augmentation
  Strategy against Imbalance and Noise", 2023, arXiv:2312.07087.
- zeta-mixup: K. Abhishek, C. J. Brown, G. Hamarneh, "Multi-Sample zeta-mixup: Richer, More Realistic Synthetic
  Samples from a p-Series Interpolant", 2022, arXiv:2204.03323.
- LUMix (on CutMix): S. Sun, J.-N. Chen, R. He, A. Yuille, P. Torr, S. Bai, "LUMix: Improving Mixup by Better
  Modelling Label Uncertainty", 2022, arXiv:2211.15846. CutMix itself: S. Yun, D. Han, S. J. Oh, S. Chun, J. Choe,
  Y. Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features", 2019,
  arXiv:1905.04899. Mixup: H. Zhang, M. Cisse, Y. N. Dauphin, D. Lopez-Paz, "mixup: Beyond Empirical Risk
  Minimization", 2017, arXiv:1710.09412.
- LaMix: anonymous authors, "Bypassing the Random Input Mixing in Mixup", ICLR 2021 submission (OpenReview
  mLtPtH2SIHX), 2020; no arXiv version.
"""
