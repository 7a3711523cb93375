"""BalanceMix's per-label categories (eq. 8-10), shared by the method and its reference."""

CLEAN, RELABELED, AMBIGUOUS = 0, 1, 2
"""C (clean: p_G > 0.5), R (re-labeled by eq. 9), U (the rest)."""
