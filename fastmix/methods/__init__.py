"""Training-side logic of the papers that is not a kernel (docs/design.md): samplers, label management, targets."""
