"""torch.library custom ops (namespace ``fastmix``): schema, fake kernel, autograd, backend dispatch."""
