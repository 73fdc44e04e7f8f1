"""EverAnimate core: the chunked long-horizon animation loop in pure torch/numpy.

Never imports ComfyUI. The ComfyUI nodes in ``nodes/`` call into this package.
"""

__version__ = "0.1.0"
