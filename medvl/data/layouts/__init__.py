"""Layout readers: one module per way a public data set is laid out on disk, each `read(cfg) -> {split: [Study]}`.

`medvl.data.sources` registers them under their source names; the module docstrings give each expected layout.
"""
