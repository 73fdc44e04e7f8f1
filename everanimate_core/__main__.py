"""Command line: ``python -m everanimate_core {demo,train-tiny,bench} ...``."""

from __future__ import annotations

import sys

USAGE = """usage: python -m everanimate_core COMMAND [options]

commands:
  demo         render a minute of animation of a held-out dancer with EverAnimate-Tiny
  train-tiny   retrain EverAnimate-Tiny on SynthDance (CPU, seeded)
  train        LoRA post-training of EverAnimate-Tiny: stage 1 (latent memory) or 2 (restorative)
  rollouts     the loop's own memory on world training clips, as LoRA training windows
  bench        benchmarks: loop overhead, memory growth, VAE round trips, drift (see --help)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from .apps.demo import main as demo_main

        demo_main(rest)
    elif cmd == "train-tiny":
        from .tiny.train_tiny import main as train_main

        train_main(rest)
    elif cmd == "train":
        from .tiny.train_rfm import main as rfm_main

        rfm_main(rest)
    elif cmd == "rollouts":
        from .tiny.loop_bank import main as rollouts_main

        rollouts_main(rest)
    elif cmd == "bench":
        from .apps.bench import main as bench_main

        bench_main(rest)
    else:
        print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return 0


def cli() -> int:
    """``main`` for a shell: a problem the user can fix is printed as one message, not a traceback."""
    from .errors import EverAnimateError

    try:
        return main()
    except EverAnimateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
