# SPDX-License-Identifier: GPL-3.0-or-later
"""Pilot (not part of the package): does a sampler that re-noises at every step lose less of the
chunk than Euler does along its own path?

Attempt 7 denoises a point of the true path to within 0.7 dB of the VAE at sigma 0.2, but its own
20 Euler steps end 1.2 dB below its one-step guess (docs/tiny_v2.md, "The sampler's trajectory").
Here every step splits the state into the model's x0 guess and the noise it implies,
``eps_hat = (x - (1 - s) x0) / s``, and moves to ``(1 - s') x0 + s' (c eps_hat + sqrt(1 - c^2) z)``
with fresh noise ``z`` and ``c = sqrt(1 - eta^2)``. ``eta = 0`` is Euler exactly (up to rounding);
``eta = 1`` throws the implied noise away and starts every step on the training's own kind of
point, a clean guess plus independent noise. Everything else is ``bench quality``'s chunk 0 and
zero-motion probe (8 dancers, 8 world clips, chunk 3, 20 steps). What each outcome means was
written in docs/tiny_v2.md ("Pilot: a sampler that re-noises") before it ran.

    OMP_NUM_THREADS=1 python docs/pilots/renoise_sampler.py --eta 0 > eta0.json
    OMP_NUM_THREADS=1 python docs/pilots/renoise_sampler.py --eta 1 > eta1.json
"""

import argparse
import contextlib
import io
import json
import math

import torch

import everanimate_core.tiny.backend as backend
from everanimate_core.apps import quality
from everanimate_core.flow import velocity_from_x0


def renoise_sampler(eta: float):
    c = math.sqrt(max(0.0, 1.0 - eta * eta))
    r = math.sqrt(max(0.0, 1.0 - c * c))

    def sample(denoiser, noise, cond, sigmas, anchor_latents=None, restoration=None, on_step=None, background=None):
        if restoration is not None or background is not None:
            raise SystemExit("the pilot sampler has no restoration or background term")
        # fresh noise seeded by the chunk's own noise, so each chunk and each run draws the same
        g = torch.Generator().manual_seed(int(abs(float(noise.flatten()[0])) * 1e9) % (2**31))
        x = noise.clone()
        n = len(sigmas) - 1
        for i in range(n):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            out = denoiser(x, s, cond)
            v = out if denoiser.prediction == "velocity" else velocity_from_x0(x, out, s)
            x0 = x - s * v
            eps = x + (1 - s) * v  # (x - (1 - s) x0) / s
            if s_next > 0 and r > 0:
                eps = c * eps + r * torch.randn(x.shape, generator=g, dtype=x.dtype)
            x = (1 - s_next) * x0 + s_next * eps
            if on_step is not None:
                on_step(i + 1, n, x)
        return x

    return sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eta", type=float, required=True, help="0: Euler; 1: all fresh noise at every step")
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--world", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    if not 0.0 <= a.eta <= 1.0:
        raise SystemExit(f"--eta must be in [0, 1], got {a.eta}")
    backend.sample_chunk = renoise_sampler(a.eta)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        quality.main(["--sequences", str(a.sequences), "--world", str(a.world), "--steps", str(a.steps)])
    print(json.dumps({"eta": a.eta, "bench": json.loads(buf.getvalue())}, indent=1))


if __name__ == "__main__":
    main()
