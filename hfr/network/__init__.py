"""The network: the frozen encoder (a timm backbone, its weights from the Hub, a file or the
environment, checked by fingerprint; three feature levels at strides 4, 8 and 16) and the
decoder that rebuilds those levels from the deepest one (the paper's, or the context decoder)."""
