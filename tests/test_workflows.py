"""Every shipped workflow matches the node schemas (types exist, widget counts/types, links)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflows"))

from schema import check_api_workflow, check_ui_workflow  # noqa: E402

SCHEMAS = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
UI = sorted((REPO / "workflows").glob("*.json"))
NAMES = [p.stem for p in UI]


def test_three_workflows_with_api_twins():
    assert {"everanimate_long_animation", "everanimate_three_chunks", "everanimate_resume_run"} <= set(NAMES)
    for n in NAMES:
        assert (REPO / "workflows" / "api" / f"{n}.json").exists(), f"{n} has no API-format twin"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_matches_schemas(name):
    wf = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    assert wf["version"] == 0.4
    assert check_ui_workflow(wf, SCHEMAS) == []
    types = {n["type"] for n in wf["nodes"]}
    assert all(t in SCHEMAS or t in ("Note", "MarkdownNote") for t in types), "only core nodes and this pack"


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_matches_schemas_and_ui(name):
    api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    ui = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    assert check_api_workflow(api, SCHEMAS) == []
    assert sorted(api) == sorted(str(n["id"]) for n in ui["nodes"] if n["type"] not in ("Note", "MarkdownNote"))


@pytest.mark.parametrize("name", NAMES)
def test_no_absolute_or_backslash_paths(name):
    text = (REPO / "workflows" / f"{name}.json").read_text() + (REPO / "workflows" / "api" / f"{name}.json").read_text()
    assert "\\\\" not in text and ":/" not in text.replace("https://", "")
    for s in json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text()).values():
        for v in s["inputs"].values():
            assert not (isinstance(v, str) and v.startswith("/")), v


def test_released_model_file_names_are_used():
    text = (REPO / "workflows" / "everanimate_long_animation.json").read_text()
    for f in ("Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
              "clip_vision_h.safetensors", "wan_2.1_vae.safetensors", "stage2_480p.safetensors"):
        assert f in text


def _long(name="everanimate_long_animation"):
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


def test_checker_catches_a_missing_widget_value():
    wf = _long()
    node = next(n for n in wf["nodes"] if n["type"] == "EverAnimateLongAnimation")
    node["widgets_values"].pop()
    assert any("widget values" in p for p in check_ui_workflow(wf, SCHEMAS))


def test_checker_catches_wrong_types_and_links_and_unknown_nodes():
    wf = _long()
    node = next(n for n in wf["nodes"] if n["type"] == "EverAnimateLongAnimation")
    bad = copy.deepcopy(wf)
    bn = next(n for n in bad["nodes"] if n["id"] == node["id"])
    bn["widgets_values"][0] = "832"  # width as a string
    assert any("expected INT" in p for p in check_ui_workflow(bad, SCHEMAS))
    bad = copy.deepcopy(wf)
    bad["links"][0][5] = "LATENT"
    assert any("link" in p for p in check_ui_workflow(bad, SCHEMAS))
    bad = copy.deepcopy(wf)
    bad["nodes"][0]["type"] = "SomeMissingNode"
    assert any("unknown node type" in p for p in check_ui_workflow(bad, SCHEMAS))
    api = json.loads((REPO / "workflows" / "api" / "everanimate_three_chunks.json").read_text())
    sampler = next(k for k, v in api.items() if v["class_type"] == "EverAnimateChunkSampler")
    api[sampler]["inputs"]["window_mode"] = "bounce"
    assert any("not one of" in p for p in check_api_workflow(api, SCHEMAS))
