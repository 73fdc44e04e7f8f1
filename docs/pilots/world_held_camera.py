# SPDX-License-Identifier: GPL-3.0-or-later
"""Pilot (not part of the package): chunk 0 and the zero-motion probe of the embedded model on world
test clips whose camera is held still for the first HOLD seconds and then follows the dancer from
rest with its own lag (the closed-form solution of v' = (u - v) / lag from v = v(0) at t = HOLD).

    OMP_NUM_THREADS=1 python docs/pilots/world_held_camera.py 4.0 8 > held.json

It swaps the world's camera path for the duration of the run only; the world of the package is
unchanged. Results and their reading: docs/tiny_v2.md, "After shipping".
"""

import json
import sys

import numpy as np

from everanimate_core.apps import quality
from everanimate_core.tiny import world
from everanimate_core.tiny.backend import load_tiny


def held_camera(hold_s: float):
    steady = world.WorldSequence._view_centre

    def view_centre(self, t):
        v = steady(self, t)
        if hold_s <= 0:
            return v
        v0 = float(steady(self, np.zeros(1))[0])
        v_hold = float(steady(self, np.full(1, hold_s))[0])
        after = v + (v0 - v_hold) * np.exp(-np.clip(t - hold_s, 0, None) / self.lag)
        return np.clip(np.where(t <= hold_s, v0, after), 0.5, self.config.plate_factor - 0.5)

    return view_centre


def main() -> None:
    hold_s = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    world.WorldSequence._view_centre = held_camera(hold_s)
    be = load_tiny(None)
    off_centre = []
    for i in range(n):
        seq = world.make_world_sequence(i, "test")
        off_centre.append(round(float(np.abs(seq.center_x(0, be.config.frames) - 0.5).max()), 3))
    out = {
        "hold_s": hold_s,
        "dancer_max_off_centre_chunk0": off_centre,
        "world_chunk0": quality.world_chunk0(be, n),
        "motion_probe": quality.motion_probe(be, n),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
