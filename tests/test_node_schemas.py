"""The nodes' widget schemas match the ComfyUI snapshot, and their defaults are the core's.

ComfyUI is not needed: a stand-in for ``comfy_api`` records what each ``define_schema`` declares,
and that is compared with ``tests/data/object_info.json`` (what a real ComfyUI reported).
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import pytest

from everanimate_core import defaults
from everanimate_core.pipeline import AnimationSettings

SNAPSHOT = Path(__file__).resolve().parent / "data" / "object_info.json"
NODE_MODULES = ("nodes.granular_nodes", "nodes.long_node", "nodes.lora_node")


class _Socket:
    """io.Int, io.Image, io.Custom("X"), ...: records Input/Output declarations."""

    def __init__(self, name: str):
        self.name = name

    def Input(self, id, optional=False, types=None, **kw):  # noqa: N802 (ComfyUI's spelling)
        name = ",".join(t.name for t in types) if types else self.name
        return {"id": id, "type": name, "optional": optional, **kw}

    def Output(self, **kw):  # noqa: N802
        return {"type": self.name, **kw}

    def __getattr__(self, attr):
        return attr


class _Io(types.ModuleType):
    ComfyNode = object

    def Schema(self, **kw):  # noqa: N802
        return kw

    def Custom(self, name):  # noqa: N802
        return _Socket(name)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Socket({"Vae": "VAE", "ClipVision": "CLIP_VISION", "MultiType": "*"}.get(attr, attr.upper()))


@pytest.fixture()
def node_modules(monkeypatch):
    api = types.ModuleType("comfy_api.v0_0_2")
    api.io, api.ui, api.ComfyExtension, api.InputImpl = _Io("io"), object(), object, object()
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_filename_list = lambda kind: []
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.v0_0_2", api)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    stubbed = ("nodes.api_version", "nodes.settings", "nodes.output", *NODE_MODULES)
    for name in stubbed:
        monkeypatch.delitem(sys.modules, name, raising=False)
    mods = [importlib.import_module(m) for m in NODE_MODULES]
    yield mods
    for name in stubbed:  # drop the modules built on the stand-in
        sys.modules.pop(name, None)


def _schemas(mods) -> dict[str, dict]:
    out = {}
    for mod in mods:
        for obj in vars(mod).values():
            if isinstance(obj, type) and obj.__module__ == mod.__name__ and hasattr(obj, "define_schema"):
                s = obj.define_schema()
                out[s["node_id"]] = s
    return out


def test_every_widget_matches_the_comfyui_snapshot(node_modules):
    snapshot = json.loads(SNAPSHOT.read_text())
    schemas = _schemas(node_modules)
    assert set(schemas) == {k for k in snapshot if k.startswith("EverAnimate")}
    for node_id, schema in schemas.items():
        declared = {i["id"]: i for i in schema["inputs"]}
        reported = {**snapshot[node_id]["input"]["required"], **snapshot[node_id]["input"].get("optional", {})}
        assert list(declared) == snapshot[node_id]["input_order"]["required"] + snapshot[node_id]["input_order"].get("optional", []), node_id
        for name, (kind, opts) in reported.items():
            mine = declared[name]
            if isinstance(kind, list) or kind == "COMBO":
                assert list(mine["options"]) == opts.get("options", kind), (node_id, name)
            else:
                assert mine["type"] == kind, (node_id, name)
            for key, value in opts.items():
                if key in ("multiselect", "options"):
                    continue
                assert mine.get(key, False) == value, (node_id, name, key)


def test_widget_defaults_are_the_core_release_defaults(node_modules):
    schemas = _schemas(node_modules)
    release = AnimationSettings()
    expected = {
        "frames_per_chunk": release.chunk.frames, "overlap": release.chunk.overlap, "anchors": release.chunk.anchors,
        "steps": release.steps, "shift": release.shift, "seed": release.seed, "cfg": defaults.CFG,
        "seed_policy": release.seed_policy, "anchor_policy": release.anchor_policy,
        "anchor_seed": release.anchor_seed, "window_mode": release.window_mode,
        "width": defaults.WIDTH, "height": defaults.HEIGHT,
    }
    for schema in schemas.values():
        for widget in schema["inputs"]:
            if widget["id"] in expected:
                assert widget["default"] == expected[widget["id"]], (schema["node_id"], widget["id"])
    assert (release.chunk.frames, release.chunk.overlap, release.chunk.anchors) == (77, 4, 4)
    assert (release.steps, release.shift, release.seed, release.anchor_seed, defaults.CFG) == (20, 5.0, 42, 12345, 1.0)
