"""The one tolerance table: dtype -> (atol, rtol) for kernel-vs-reference comparisons.

About twice PyTorch's own rounding error in that dtype against float64 (one output ulp plus the reordering of
a B-term fp32 sum), and no looser. Widening an entry needs a reason written next to it.
"""

import torch

TOLERANCES = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 2e-3),  # 2 ulp at 2^-10 relative
    torch.bfloat16: (1e-2, 1.6e-2),  # 2 ulp at 2^-7 relative
}


# fastmix.fit_gmm2 vs scikit-learn's GaussianMixture from the same initial parameters, float64: 1e-4
# relative (both run the same float64 EM; the sums are ordered differently, and EM amplifies that a little).
SKLEARN_GMM_PARITY = {"atol": 1e-10, "rtol": 1e-4}


def tolerance(dtype: torch.dtype) -> dict:
    atol, rtol = TOLERANCES[dtype]
    return {"atol": atol, "rtol": rtol}
