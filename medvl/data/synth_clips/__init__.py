"""Synthetic satellite clips for the medicane recipes and tests: airmass-like frames with a vortex that moves along a
real medicane track (or a built-in random one), written in the clip layout (`medvl.data.layouts.clips`).

Modules: `tracks` (real and random tracks, resampling), `render` (the frames), `generate` (clips, labels, splits,
files). Importing this package only imports numpy.
"""

from medvl.data.synth_clips.generate import generate_clips, km_per_pixel, make_clip

__all__ = ["generate_clips", "km_per_pixel", "make_clip"]
