"""Every shipped workflow matches the node schemas and the frontend's widget rules (types exist,
widget counts with the controls the frontend adds, links, the prompt equals the API twin, layout,
model download entries, the template-browser copies). The real-frontend check is
tests/integration/test_browser_workflows.py."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflows"))

from schema import (  # noqa: E402
    FRONTEND_ONLY,
    accepts,
    check_api_workflow,
    check_ui_workflow,
    frontend_widgets,
    has_control_widget,
    ui_widget_items,
)

SCHEMAS = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
UI = sorted((REPO / "example_workflows").glob("*.json"))
NAMES = [p.stem for p in UI]


def test_three_workflows_with_api_twins():
    assert {"everanimate_long_animation", "everanimate_three_chunks", "everanimate_resume_run"} <= set(NAMES)
    for n in NAMES:
        assert (REPO / "workflows" / "api" / f"{n}.json").exists(), f"{n} has no API-format twin"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_matches_schemas(name):
    wf = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    assert wf["version"] == 0.4
    assert check_ui_workflow(wf, SCHEMAS) == []
    types = {n["type"] for n in wf["nodes"]}
    assert all(t in SCHEMAS or t in ("Note", "MarkdownNote") for t in types), "only core nodes and this pack"


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_matches_schemas_and_ui(name):
    api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    assert check_api_workflow(api, SCHEMAS) == []
    assert sorted(api) == sorted(str(n["id"]) for n in ui["nodes"] if n["type"] not in ("Note", "MarkdownNote"))


@pytest.mark.parametrize("name", NAMES)
def test_no_absolute_or_backslash_paths(name):
    text = (REPO / "example_workflows" / f"{name}.json").read_text() + (REPO / "workflows" / "api" / f"{name}.json").read_text()
    assert "\\\\" not in text and ":/" not in text.replace("https://", "")
    for s in json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text()).values():
        for v in s["inputs"].values():
            assert not (isinstance(v, str) and v.startswith("/")), v


def test_released_model_file_names_are_used():
    text = (REPO / "example_workflows" / "everanimate_long_animation.json").read_text()
    for f in ("Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
              "clip_vision_h.safetensors", "wan_2.1_vae.safetensors", "stage2_480p.safetensors"):
        assert f in text


def _long(name="everanimate_long_animation"):
    return json.loads((REPO / "example_workflows" / f"{name}.json").read_text())


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


# --------------------------------------------------------------------------------------------
# the frontend's rules
# --------------------------------------------------------------------------------------------


def test_control_widget_rules_of_the_frontend():
    assert has_control_widget("seed", "INT", {}), "an INT named seed gets a control when the schema is silent"
    assert has_control_widget("noise_seed", "INT", {})
    assert not has_control_widget("seed", "INT", {"control_after_generate": False})
    assert has_control_widget("anchor_seed", "INT", {"control_after_generate": True})
    assert not has_control_widget("anchor_seed", "INT", {})
    assert not has_control_widget("steps", "INT", {})
    assert has_control_widget("mode", ["a", "b"], {"control_after_generate": True})
    assert not has_control_widget("mode", ["a", "b"], {})
    with pytest.raises(ValueError, match="FLOAT"):
        has_control_widget("cfg", "FLOAT", {"control_after_generate": True})
    with pytest.raises(ValueError, match="string"):
        has_control_widget("seed", "INT", {"control_after_generate": "fixed"})


def test_frontend_widget_order_puts_upload_and_control_right_after_their_widget():
    info = {"input": {"required": {"seed": ["INT", {"default": 1}], "file": ["COMBO", {"options": [], "video_upload": True}], "x": ["FLOAT", {}]}},
            "input_order": {"required": ["seed", "file", "x"]}}
    assert [(w.name, w.kind) for w in frontend_widgets(info)] == [
        ("seed", "value"), ("control_after_generate", "control"), ("file", "value"), ("upload", "upload"), ("x", "value")]


def test_multi_type_sockets_accept_each_of_their_types():
    assert accepts("VIDEO,IMAGE", "VIDEO") and accepts("VIDEO,IMAGE", "IMAGE")
    assert not accepts("VIDEO,IMAGE", "LATENT") and accepts("*", "LATENT")


def _prompt_of(ui: dict) -> dict:
    """What graphToPrompt sends for a UI file: serialised widget values (no controls, no upload
    buttons) and links, keyed by node id."""
    links = {lk[0]: lk for lk in ui["links"]}
    out = {}
    for n in ui["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        inputs = {}
        for (name, value), w in zip(ui_widget_items(n, SCHEMAS), frontend_widgets(SCHEMAS[n["type"]])):
            if w.kind == "value":
                inputs[name] = value
        for i in n["inputs"]:
            if i.get("link") is not None:
                lk = links[i["link"]]
                inputs[i["name"]] = [str(lk[1]), lk[2]]
        out[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return out


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_makes_the_api_twin_as_the_frontend_reads_it(name):
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    assert _prompt_of(ui) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


@pytest.mark.parametrize("name", NAMES)
def test_seed_controls_ship_fixed_so_requeueing_resumes(name):
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    controls = [v for n in ui["nodes"] for k, v in ui_widget_items(n, SCHEMAS) if k == "control_after_generate"]
    seeded = [n for n in ui["nodes"] if n["type"] in ("EverAnimateLongAnimation", "EverAnimateChunkSampler")]
    assert len(controls) == len(seeded) > 0 and set(controls) == {"fixed"}


def test_a_file_without_the_control_value_is_caught():
    """The bug the first generator shipped: no control value after the seed shifts every widget."""
    wf = _long()
    node = next(n for n in wf["nodes"] if n["type"] == "EverAnimateLongAnimation")
    widgets = frontend_widgets(SCHEMAS[node["type"]])
    del node["widgets_values"][[w.kind for w in widgets].index("control")]
    assert any("widget values" in p for p in check_ui_workflow(wf, SCHEMAS))


def _box(n):
    return (n["pos"][0], n["pos"][1] - 30, n["size"][0], n["size"][1] + 30)


@pytest.mark.parametrize("name", NAMES)
def test_nodes_do_not_overlap_and_groups_hold_their_nodes(name):
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    boxes = [(n["id"], _box(n)) for n in ui["nodes"]]
    for i, (a, (ax, ay, aw, ah)) in enumerate(boxes):
        for b, (bx, by, bw, bh) in boxes[i + 1 :]:
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), f"nodes {a} and {b} overlap"
    assert len(ui["groups"]) >= 4, "the steps are grouped like ComfyUI's own templates"
    for g in ui["groups"]:
        gx, gy, gw, gh = g["bounding"]
        inside = [n for n in ui["nodes"] if gx <= _box(n)[0] and _box(n)[0] + _box(n)[2] <= gx + gw and gy <= _box(n)[1] and _box(n)[1] + _box(n)[3] <= gy + gh]
        assert inside, f"group {g['title']!r} holds no node"
    notes = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert any("DWPose" in n["widgets_values"][0] for n in notes), "a note says how to make the pose video"
    assert any("huggingface.co" in n["widgets_values"][0] for n in notes), "a note lists the model links"


@pytest.mark.parametrize("name", NAMES)
def test_every_model_file_carries_its_download_url_and_folder(name):
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    loaders = {"UNETLoader": "unet_name", "VAELoader": "vae_name", "CLIPLoader": "clip_name", "CLIPVisionLoader": "clip_name", "EverAnimateLoadLoRA": "lora_name"}
    seen = 0
    for n in ui["nodes"]:
        if n["type"] in loaders:
            file = dict(ui_widget_items(n, SCHEMAS))[loaders[n["type"]]]
            models = n["properties"].get("models", [])
            assert [m["name"] for m in models] == [file], f"{n['type']} names {file} but lists {models}"
            assert models[0]["url"].startswith("https://huggingface.co/") and models[0]["url"].endswith("/" + file)
            seen += 1
    assert seen == 5


@pytest.mark.parametrize("name", NAMES)
def test_each_template_has_a_thumbnail(name):
    assert (REPO / "example_workflows" / f"{name}.jpg").stat().st_size > 5000


def test_workflows_folder_holds_no_second_copy_for_the_template_browser_to_list_twice():
    assert not list((REPO / "workflows").glob("*.json")), "ComfyUI lists workflows/*.json beside example_workflows/*.json"


def test_generator_reproduces_the_shipped_files():
    import build  # workflows/build.py

    for name, g in build.build(SCHEMAS).items():
        assert json.dumps(g.ui(), indent=1, ensure_ascii=False) + "\n" == (REPO / "example_workflows" / f"{name}.json").read_text(), f"{name}: run python workflows/build.py"
        assert json.dumps(g.api(), indent=1, ensure_ascii=False) + "\n" == (REPO / "workflows" / "api" / f"{name}.json").read_text()


def test_every_pack_node_has_a_help_page():
    """The frontend's node help reads /extensions/<pack>/docs/<NodeId>.md (WEB_DIRECTORY = web)."""
    ids = sorted(n for n in SCHEMAS if n.startswith("EverAnimate"))
    assert len(ids) == 7  # the six nodes of the design card + Chunk Conditioning
    for nid in ids:
        page = (REPO / "web" / "docs" / f"{nid}.md").read_text()
        assert page.startswith("# " + SCHEMAS[nid]["display_name"].split(" (")[0]), nid
