"""Training-side logic of the papers that is not a kernel (DESIGN.md): samplers, label management, targets."""
