"""Pure-PyTorch references, written from the papers: the ground truth every kernel is tested against."""
