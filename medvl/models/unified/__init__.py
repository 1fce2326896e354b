"""The `unified` family: BiomedGPT's instruction-driven encoder-decoder (OFA architecture).

Modules: `config` (config + size presets), `positions` (absolute/relative position biases), `layers` (Transformer
layers with the NormFormer tweaks), `model` (`UnifiedModel`: encode / decode / forward), `generation` (greedy and
beam search with a key/value cache, candidate scoring), `trie` (`PrefixTrie` for answer-constrained decoding).
Nothing is imported here so that `import medvl` stays cheap.
"""
