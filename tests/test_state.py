"""Tests for everanimate_core.infra.checkpoint: checkpoints, fingerprints, run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from everanimate_core.errors import ConfigError, ResumeStateError
from everanimate_core.infra.checkpoint import load_state, save_state
from everanimate_core.infra.identity import config_diff, config_fingerprint
from everanimate_core.infra.runs import RunFolder

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"frames_per_chunk": 81, "overlap": 5, "cfg": 5.0, "sampler": {"steps": 20, "shift": 3.5}}


def sample_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, 6, 5, generator=g)
    return {
        "latent": base,
        "memory_bf16": torch.randn(3, 7, generator=g).to(torch.bfloat16),
        "indices": torch.arange(10, dtype=torch.int64) * (2**40) - 5,  # needs 64 bits
        "mask": torch.randint(0, 256, (2, 3), generator=g, dtype=torch.uint8),
        "transposed": base[0].t(),  # non-contiguous view sharing storage with latent
        "slice": base[1:3],  # contiguous view into latent's storage
    }


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- fingerprints ---------------------------------------------------------------------


def test_fingerprint_canonical() -> None:
    fp = config_fingerprint(CONFIG)
    assert len(fp) == 64 and int(fp, 16) >= 0
    reordered = {"sampler": {"shift": 3.5, "steps": 20.0}, "cfg": 5, "overlap": 5, "frames_per_chunk": 81}
    assert config_fingerprint(reordered) == fp  # key order and 5 vs 5.0 do not matter
    assert config_fingerprint({**CONFIG, "overlap": 6}) != fp
    assert config_fingerprint({**CONFIG, "cfg": 5.5}) != fp
    assert config_fingerprint({"a": (1, 2)}) == config_fingerprint({"a": [1, 2]})
    assert config_fingerprint({"a": True}) != config_fingerprint({"a": 1})
    with pytest.raises(ConfigError, match="NaN"):
        config_fingerprint({"cfg": float("nan")})
    with pytest.raises(ConfigError, match="type"):
        config_fingerprint({"x": object()})
    assert config_diff(CONFIG, {**CONFIG, "sampler": {"steps": 30, "shift": 3.5}}) == [
        "sampler.steps: 20 -> 30"
    ]


# -- save / load ----------------------------------------------------------------------


def test_roundtrip_exact(tmp_path: Path) -> None:
    tensors = sample_tensors()
    meta = {"fingerprint": config_fingerprint(CONFIG), "config": CONFIG, "step": 3, "note": "é"}
    save_state(tmp_path, "ck", tensors, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.safetensors"]
    loaded, loaded_meta = load_state(tmp_path, "ck", expected_fingerprint=config_fingerprint(CONFIG))
    assert_same(loaded, {k: v.contiguous() for k, v in tensors.items()})
    assert loaded_meta == meta
    record = json.loads((tmp_path / "ck.json").read_text())
    assert record["format_version"] == 1
    assert record["safetensors"]["bytes"] == (tmp_path / "ck.safetensors").stat().st_size
    assert len(record["safetensors"]["sha256"]) == 64


def test_meta_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JSON"):
        save_state(tmp_path, "ck", sample_tensors(), {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_mismatch_names_key(tmp_path: Path) -> None:
    save_state(tmp_path, "ck", sample_tensors(), {"fingerprint": config_fingerprint(CONFIG), "config": CONFIG})
    other = {**CONFIG, "overlap": 9}
    with pytest.raises(ResumeStateError, match=r"overlap: 5 -> 9") as info:
        load_state(tmp_path, "ck", expected_config=other)
    assert "frames_per_chunk" not in str(info.value)
    with pytest.raises(ResumeStateError, match="different settings"):
        load_state(tmp_path, "ck", expected_fingerprint=config_fingerprint(other))
    # same config written with floats/ints swapped still matches
    load_state(tmp_path, "ck", expected_config={**CONFIG, "cfg": 5, "overlap": 5.0})


def test_missing_fingerprint_and_missing_files(tmp_path: Path) -> None:
    save_state(tmp_path, "ck", sample_tensors(), {"step": 1})
    with pytest.raises(ResumeStateError, match="no config fingerprint"):
        load_state(tmp_path, "ck", expected_fingerprint="0" * 64)
    with pytest.raises(ResumeStateError, match="missing"):
        load_state(tmp_path, "nothing")
    (tmp_path / "ck.safetensors").unlink()
    with pytest.raises(ResumeStateError, match="missing.*start over"):
        load_state(tmp_path, "ck")


def test_truncated_safetensors_raises(tmp_path: Path) -> None:
    save_state(tmp_path, "ck", sample_tensors(), {})
    p = tmp_path / "ck.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[:-3])
    with pytest.raises(ResumeStateError, match="truncated.*delete the run folder or pick another one"):
        load_state(tmp_path, "ck")


def test_corrupted_byte_raises(tmp_path: Path) -> None:
    save_state(tmp_path, "ck", sample_tensors(), {})
    p = tmp_path / "ck.safetensors"
    data = bytearray(p.read_bytes())
    data[len(data) - 10] ^= 0x01  # one bit in the tensor data: still parses, wrong values
    p.write_bytes(bytes(data))
    with pytest.raises(ResumeStateError, match="corrupted.*delete the run folder"):
        load_state(tmp_path, "ck")


def test_garbage_json_raises(tmp_path: Path) -> None:
    save_state(tmp_path, "ck", sample_tensors(), {})
    (tmp_path / "ck.json").write_text('{"format": "everanimate-state", "format_ver')
    with pytest.raises(ResumeStateError, match="not valid JSON.*start over"):
        load_state(tmp_path, "ck")
    (tmp_path / "ck.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(ResumeStateError, match="corrupted"):
        load_state(tmp_path, "ck")


def test_unknown_format_version_raises(tmp_path: Path) -> None:
    save_state(tmp_path, "ck", sample_tensors(), {})
    record = json.loads((tmp_path / "ck.json").read_text())
    record["format_version"] = 99
    (tmp_path / "ck.json").write_text(json.dumps(record))
    with pytest.raises(ResumeStateError, match="format version 99"):
        load_state(tmp_path, "ck")


@pytest.mark.parametrize("failing_call", [1, 2])
def test_crash_during_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """os.replace call 1 moves the tensor file, call 2 the JSON; a crash at either keeps
    the previous checkpoint loadable, and the next save works normally."""
    old = sample_tensors(0)
    save_state(tmp_path, "ck", old, {"step": 1})
    new = sample_tensors(1)
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == failing_call:
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="simulated crash"):
        save_state(tmp_path, "ck", new, {"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)

    loaded, meta = load_state(tmp_path, "ck")
    assert meta == {"step": 1}
    assert_same(loaded, {k: v.contiguous() for k, v in old.items()})
    assert not [n for n in leftovers(tmp_path) if n.endswith(".tmp")]

    save_state(tmp_path, "ck", new, {"step": 2})
    loaded, meta = load_state(tmp_path, "ck")
    assert meta == {"step": 2}
    assert_same(loaded, {k: v.contiguous() for k, v in new.items()})
    assert leftovers(tmp_path) == []  # backup and temp files are gone after a good save


def test_two_crashes_in_a_row_keep_the_committed_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = sample_tensors(0)
    save_state(tmp_path, "ck", old, {"step": 1})
    real_replace = os.replace

    def fail_on_json(src, dst):  # type: ignore[no-untyped-def]
        if str(dst).endswith(".json"):
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_json)
    for seed in (1, 2):
        with pytest.raises(OSError):
            save_state(tmp_path, "ck", sample_tensors(seed), {"step": 1 + seed})
    monkeypatch.setattr(os, "replace", real_replace)
    loaded, meta = load_state(tmp_path, "ck")
    assert meta == {"step": 1}
    assert_same(loaded, {k: v.contiguous() for k, v in old.items()})


# -- run folders ----------------------------------------------------------------------


def test_run_folder_resume_bookkeeping(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = RunFolder(run_dir, CONFIG).open_or_create()
    assert run.finished_chunks() == [] and run.last_finished() is None
    for i in range(3):
        run.save_chunk(i, {"latent": torch.full((2, 2), float(i))}, {"frames": 81})

    # a fresh object (as after a restart) sees the same progress
    again = RunFolder(run_dir, {**CONFIG, "cfg": 5}).open_or_create()
    assert again.fingerprint == run.fingerprint
    assert again.finished_chunks() == [0, 1, 2]
    assert again.last_finished() == 2
    tensors, meta = again.load_chunk(1)
    assert torch.equal(tensors["latent"], torch.full((2, 2), 1.0))
    assert meta["chunk_index"] == 1 and meta["frames"] == 81 and meta["fingerprint"] == run.fingerprint
    with pytest.raises(ResumeStateError, match="resume from chunk 3"):
        again.load_chunk(5)

    # a chunk finished after a gap does not move the resume point
    again.save_chunk(4, {"latent": torch.zeros(1)}, {})
    assert again.finished_chunks() == [0, 1, 2, 4]
    assert again.last_finished() == 2

    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["finished_chunks"] == [0, 1, 2, 4]
    assert progress["fingerprint"] == run.fingerprint


def test_run_folder_other_config_refused(tmp_path: Path) -> None:
    RunFolder(tmp_path, CONFIG).open_or_create().save_chunk(0, {"x": torch.ones(1)}, {})
    other = RunFolder(tmp_path, {**CONFIG, "sampler": {"steps": 20, "shift": 5.0}})
    for action in (other.open_or_create, other.check_compatible, other.finished_chunks):
        with pytest.raises(ResumeStateError, match=r"sampler\.shift: 3\.5 -> 5"):
            action()
    with pytest.raises(ResumeStateError):
        other.save_chunk(1, {"x": torch.ones(1)}, {})
    assert not (tmp_path / "chunk_00001.json").exists()


def test_run_folder_corrupted_progress(tmp_path: Path) -> None:
    run = RunFolder(tmp_path, CONFIG).open_or_create()
    (tmp_path / "progress.json").write_text("{not json")
    with pytest.raises(ResumeStateError, match="corrupted"):
        run.finished_chunks()


def test_run_folder_across_processes(tmp_path: Path) -> None:
    """A second interpreter continues a run folder written by this one."""
    run = RunFolder(tmp_path, CONFIG).open_or_create()
    run.save_chunk(0, {"x": torch.arange(3)}, {})
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(REPO)!r})
        from everanimate_core.infra.runs import RunFolder
        run = RunFolder({str(tmp_path)!r}, {CONFIG!r}).open_or_create()
        start = run.last_finished() + 1
        x, _ = run.load_chunk(start - 1)
        run.save_chunk(start, {{"x": x["x"] + 1}}, {{}})
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert run.finished_chunks() == [0, 1]
    assert torch.equal(run.load_chunk(1)[0]["x"], torch.arange(3) + 1)
