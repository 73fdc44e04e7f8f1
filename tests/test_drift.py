"""The drift benchmark: its statistics, its report, and one short real run of the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from everanimate_core.apps.drift import (
    VARIANTS,
    LORA_DIR,
    bench_drift,
    markdown_table,
    mean_ci,
    paired_diff,
    paired_gain,
    run_sequence,
    signature,
    summarize,
    svg_plot,
)
from everanimate_core.errors import ConfigError

FPS = 8.0


def test_mean_ci_and_paired_statistics():
    m, ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and ci == pytest.approx(3.18 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-3)
    base = np.array([20.0, 22.0, 24.0, 26.0, 21.0])
    g, lo, hi = paired_gain(base * 1.10, base)
    assert g == pytest.approx(10.0) and lo == pytest.approx(10.0) and hi == pytest.approx(10.0)
    g, lo, hi = paired_gain(base * 0.9, base, higher_better=False)  # 10 % less error = +10 %
    assert g == pytest.approx(10.0)
    rng = np.random.default_rng(0)
    noisy = base + rng.normal(0, 1.0, 5)
    d, lo, hi = paired_diff(noisy, base)
    assert lo <= d <= hi


def _fake_run(variant: str, index: int, drift_per_s: float, level: float = 24.0, seconds: int = 90) -> dict:
    n = int(seconds * FPS)
    t = np.arange(n) / FPS
    rng = np.random.default_rng(index)
    psnr = level + 0.3 * rng.normal(size=n) - drift_per_s * t + 0.2 * index
    return {
        "variant": variant,
        "index": index,
        "frames": n,
        "per_frame": {"psnr": psnr.tolist(), "ssim": (0.6 - 0.001 * drift_per_s * t).tolist(),
                      "bg_psnr": (psnr + 3).tolist(), "id_err": (30 + drift_per_s * t).tolist()},
        "seam_ratio": {"10": 1.5, "90": 1.6},
        "window": 80,
    }


def test_summary_and_signature_tell_drift_from_no_drift():
    runs = [_fake_run("a", i, 0.05) for i in range(6)] + [_fake_run("c+", i, 0.0) for i in range(6)]
    runs += [_fake_run("d", i, 0.0, level=24.3) for i in range(6)]
    s = summarize(runs, FPS)
    assert set(s) == {"a", "c+", "d"}
    assert len(s["a"]["scores"]["psnr@90"]) == 6
    assert s["a"]["mean_ci"]["psnr@90"][0] < s["a"]["mean_ci"]["psnr@10"][0] - 1.0
    assert s["a"]["mean_ci"]["psnr@90w"][0] < s["a"]["mean_ci"]["psnr@90"][0]
    assert len(s["d"]["psnr_curve"]) == 90
    sig = signature(s)
    assert all(ok for ok, _ in sig.values()), sig
    # no drift anywhere and no difference to (c+): the signature says no
    flat = [_fake_run(v, i, 0.0) for v in ("a", "c+", "d") for i in range(6)]
    sig = signature(summarize(flat, FPS))
    assert not sig["(d) beats (a) by more at 90 s than at 10 s (PSNR)"][0]
    assert not sig["(d) beats (c+) at 90 s beyond the interval (PSNR)"][0]


def test_report_has_a_table_per_horizon_gains_beside_the_paper_and_a_plot():
    runs = [_fake_run(v, i, 0.05 if v == "a" else 0.0) for v in ("a", "c", "c+", "d") for i in range(4)]
    s = summarize(runs, FPS)
    meta = {"command": "cmd", "sequences": 4, "seconds": 90, "fps": FPS, "frames": 720, "chunks": 25, "run_s_mean": 1.0,
            "chunk_frames": 33, "steps": 20, "wall_s": 1.0, "workers": 1}
    md = markdown_table(s, meta)
    assert "## Horizon 10 s" in md and "## Horizon 90 s" in md
    assert "| (d) vs (a) | 90 s |" in md and "+15 / +15" in md
    assert md.count("| (a) decoded-frame carry |") == 2
    svg = svg_plot(s, FPS)
    assert svg.startswith("<svg") and svg.count("<polyline") == 4


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="Unknown variants"):
        bench_drift(variants=("z",), out_dir=None)
    with pytest.raises(ConfigError, match="at least 90 s"):
        bench_drift(seconds=30, out_dir=None)
    with pytest.raises(ConfigError, match="needs the LoRA"):
        bench_drift(variants=("d",), lora_dir=tmp_path, out_dir=None)


def test_a_short_real_run_scores_every_frame_and_decoded_carry_differs_from_latent_carry():
    ra = run_sequence(VARIANTS["a"], 0, 10, 2, LORA_DIR)
    rb = run_sequence(VARIANTS["b"], 0, 10, 2, LORA_DIR)
    for r in (ra, rb):
        assert r["frames"] == 80
        assert all(len(v) == 80 for v in r["per_frame"].values())
        assert 12 < np.mean(r["per_frame"]["psnr"]) < 40
        assert 0 < np.mean(r["per_frame"]["ssim"]) <= 1
    # chunk 0 is identical (same seed, same anchors); after the first join the carries differ
    assert ra["per_frame"]["psnr"][:33] == rb["per_frame"]["psnr"][:33]
    assert ra["per_frame"]["psnr"][33:] != rb["per_frame"]["psnr"][33:]


def test_finished_runs_are_cached_and_reused(tmp_path):
    out = tmp_path / "docs"
    first = bench_drift(sequences=1, seconds=90, steps=1, variants=("b",), workers=1, out_dir=out,
                        cache_dir=tmp_path / "cache", log=lambda m: None)
    assert first["meta"]["runs_computed"] == 1 and len(list((tmp_path / "cache").glob("*.json"))) == 1
    again = bench_drift(sequences=1, seconds=90, steps=1, variants=("b",), workers=1, out_dir=out,
                        cache_dir=tmp_path / "cache", log=lambda m: None)
    assert again["meta"]["runs_computed"] == 0 and again["meta"]["runs_reused"] == 1
    assert again["summary"]["b"]["scores"] == first["summary"]["b"]["scores"]
    assert (out / "drift_results.md").exists() and (out / "drift_psnr.svg").exists()
    # another step count is another run
    other = bench_drift(sequences=1, seconds=90, steps=2, variants=("b",), workers=1, out_dir=out,
                        cache_dir=tmp_path / "cache", log=lambda m: None)
    assert other["meta"]["runs_computed"] == 1


def test_an_earlier_results_file_joins_the_tables_only_for_the_same_clips_horizon_and_steps(tmp_path):
    out = tmp_path / "docs"
    first = bench_drift(sequences=1, seconds=90, steps=1, variants=("b",), workers=1, out_dir=out, log=lambda m: None)
    stored = out / "drift_results.json"
    both = bench_drift(sequences=1, seconds=90, steps=1, variants=("c",), workers=1, out_dir=tmp_path / "more",
                       reuse=stored, log=lambda m: None)
    assert list(both["summary"]) == ["b", "c"] and both["meta"]["runs_computed"] == 1
    assert both["summary"]["b"]["scores"] == first["summary"]["b"]["scores"]
    assert {k: m for k, (m, _) in both["summary"]["b"]["mean_ci"].items()} == \
        {k: m for k, (m, _) in first["summary"]["b"]["mean_ci"].items()}
    assert "(b) are the scores stored in" in both["table"] and "(c) vs (b)" not in both["table"]
    assert "| (d) vs (c) |" not in both["table"]
    for kwargs, what in (({"steps": 2}, "steps 1 there, 2 here"), ({"world": True}, "scene 'plain' there")):
        with pytest.raises(ConfigError, match=what):
            bench_drift(**{"sequences": 1, "seconds": 90, "steps": 1, "variants": ("c",), "out_dir": None,
                           "reuse": stored, **kwargs})
    # on the world, the base model's zero-motion probe comes with the reused file, said so in the gate
    w = bench_drift(sequences=1, seconds=90, steps=1, variants=("a",), workers=1, out_dir=tmp_path / "w",
                    world=True, log=lambda m: None)
    w2 = bench_drift(sequences=1, seconds=90, steps=1, variants=("c",), workers=1, out_dir=None, world=True,
                     reuse=tmp_path / "w" / "drift_world_results.json", log=lambda m: None)
    assert w2["meta"]["probe"]["zero_motion_cost"] == w["meta"]["probe"]["zero_motion_cost"]
    assert "measured by the run of" in w2["table"] and list(w2["summary"]) == ["a", "c"]
    with pytest.raises(ConfigError, match="no such results file"):
        bench_drift(sequences=1, seconds=90, steps=1, variants=("c",), out_dir=None, reuse=tmp_path / "none.json")


def test_world_requests_outside_the_split_or_a_lora_folder_outside_its_base_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds 200 clips"):
        bench_drift(sequences=20, offset=190, world=True, variants=("a",), out_dir=None)
    with pytest.raises(ConfigError, match="--offset at least 0"):
        bench_drift(sequences=1, offset=-1, variants=("a",), out_dir=None)
    with pytest.raises(ConfigError, match="not inside an EverAnimate-Tiny weights folder"):
        run_sequence(VARIANTS["a"], 0, 10, 1, tmp_path / "lora")


def test_the_shell_command_says_what_to_change_without_a_traceback():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "everanimate_core", "bench", "drift", "--world", "--offset", "195",
                        "--sequences", "20", "--cache", ""], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: The world's test split holds 200 clips"), r.stderr
    assert "Traceback" not in r.stderr and "Lower --sequences or --offset" in r.stderr


def test_a_short_world_run_scores_the_scene_state_with_a_seed_per_clip():
    from everanimate_core.apps.drift import world_seed
    from everanimate_core.tiny.backend import WEIGHTS_DIR

    r0 = run_sequence(VARIANTS["a"], 0, 10, 1, WEIGHTS_DIR / "lora", world=True)
    r1 = run_sequence(VARIANTS["a"], 1, 10, 1, WEIGHTS_DIR / "lora", world=True)
    assert r0["world"] and r0["seed"] == world_seed(0) != r1["seed"] == world_seed(1)
    assert set(r0["per_frame"]) >= {"psnr", "revealed_psnr", "panel_err"}
    assert all(len(v) == 80 for v in r0["per_frame"].values())
    panel = np.asarray(r0["per_frame"]["panel_err"], float)
    assert np.isfinite(panel[:8]).all() and np.nanmax(panel) < 255  # the panel starts wholly in view
    runs = [r0, r1]
    for r in runs:  # the summary and the report take the world metrics and the gates
        r["seam_ratio"] = {"10": 1.0, "90": 1.0}
        r["per_frame"] = {k: (v * 9)[:720] for k, v in r["per_frame"].items()}
    summary = summarize(runs, FPS)
    meta = {"command": "x", "scene": "world", "offset": 0, "sequences": 2, "seconds": 90, "fps": FPS,
            "frames": 720, "chunks": 25, "chunk_frames": 33, "steps": 1, "wall_s": 1.0, "workers": 1,
            "probe": {"zero_motion_cost": 3.5, "true_motion": 20.0, "zero_motion": 16.5, "sequences": 2, "probe_chunk": 3}}
    table = markdown_table(summary, meta)
    assert "revealed-plate PSNR" in table and "zero-motion probe costs >= 3 dB: **passed**" in table
    assert "(a) loses >= 1 dB" in table


def test_every_variant_s_lora_ships_with_the_package_finished_and_in_the_released_format():
    import json

    from safetensors.torch import load_file

    from everanimate_core.infra.lora import parse_lora_state_dict

    for v in VARIANTS.values():
        if v.lora is None:
            continue
        path = LORA_DIR / f"{v.lora}.safetensors"
        assert path.is_file(), f"variant ({v.key}) needs {path.name}, which the package does not ship"
        lf = parse_lora_state_dict(load_file(str(path)))
        assert lf.modules and lf.format == "released", f"{path.name}: {len(lf.modules)} modules, format {lf.format}"
        summary = json.loads((LORA_DIR / f"{v.lora}.json").read_text())
        assert summary["steps_done"] == summary["loop"]["steps"], f"{path.name} is an unfinished training"
