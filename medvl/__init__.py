"""medvl: train, evaluate and serve vision-language models for medical imaging.

Importing the package is cheap and has no side effects: components are looked up by
name from the explicit tables in the modules that own them (see `medvl.registry`).
"""

__version__ = "0.1.0"
