"""The `vq` family: a VQ image tokenizer (VQ-VAE / VQ-GAN autoencoder with a vector-quantized bottleneck).

Modules: `config` (`VQConfig`, size presets, the config of a taming-transformers yaml), `layers` (the convolutional
encoder and decoder), `quantizer` (`VectorQuantizer`: nearest codebook entry, straight-through gradient, commitment
loss, EMA codebook with dead-code restart; `GumbelQuantizer` for taming's GumbelVQ checkpoints, codes only),
`model` (`VQModel`: encode -> codes, decode), `taming` (a user's taming-transformers checkpoint -> `VQModel`).
The module tree and state-dict keys follow taming-transformers' `VQModel`, so one class serves medvl's own small
VQ-VAE and a VQ-GAN checkpoint the user brings. Nothing is imported here so that `import medvl` stays cheap.
"""
