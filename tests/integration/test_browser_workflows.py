"""The shipped UI workflows in the real ComfyUI frontend, driven through a headless Chromium.

For every ``example_workflows/*.json`` (API twins in ``workflows/api/``) and every frontend under test (the one ComfyUI ships and newer ones
named in EVERANIMATE_FRONTEND_ROOTS) a test drops the file on the canvas as a user does and checks
what the frontend made of it: each node's widgets (name, value) against
``workflows.schema.ui_widget_items``, the prompt it would send against the API twin, the seed
controls, node overlaps, the model download entries, and that no error or Missing Models/Nodes
warning came up. It screenshots the fitted canvas (EVERANIMATE_SCREENSHOTS). Then it edits the graph
in the page to the tiny test models (text encoder -> the test pack's zero conditioning, no CLIP vision,
no face video, 64x64, 9-frame chunks, 2 steps), queues it through the frontend and checks the MP4; the
Long Animation graphs are also cancelled after a chunk and queued again to resume.

Environment:
    COMFYUI_PATH                 ComfyUI checkout (run pytest with ComfyUI's Python)
    EVERANIMATE_CHROMIUM         Chromium executable (default: ``chromium`` on PATH); never downloaded
    EVERANIMATE_FRONTEND_ROOTS   extra frontends, os.pathsep-separated ``VERSION=DIR`` or ``DIR``
                                 entries, DIR = the ``static`` folder of a comfyui-frontend-package
                                 wheel (1.58.1 is expected; it is skipped, saying so, when not given)
    EVERANIMATE_SCREENSHOTS      folder for ``<workflow>__<frontend version>.png`` (default: tmp)
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # workflows.schema (pure Python)

from browser import ComfyPage, chromium_executable, launch_browser  # noqa: E402
from comfy_server import start_server  # noqa: E402

pytestmark = pytest.mark.integration

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))  # the UI workflows (ComfyUI lists them as templates)
EXPECTED_FRONTENDS = ["1.58.1"]  # besides the one ComfyUI ships
POSE_FRAMES = 23
THREE_CHUNK_TOTAL = 19  # 3 chunks of 9 frames with overlap 4: 9 + 5 + 5
# run_folder "keep": the resume test compares the chunk segments of both run folders
SMALL = {"width": 64, "height": 64, "frames_per_chunk": 9, "overlap": 4, "steps": 2, "run_folder": "keep"}
REQUIRE_BYTE_IDENTICAL_RESUME = True  # the writer turns off x264's mbtree (see everanimate_core/infra/video.py)

# The shipped file names, served by the tiny test weights.
SHIPPED_UNET = ("diffusion_models", "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors")
SHIPPED_VAE = ("vae", "wan_2.1_vae.safetensors")
SHIPPED_LORA = ("loras", "stage2_480p.safetensors")
# The few-step workflow's distilled LoRA, loaded by ComfyUI's stock LoraLoaderModelOnly: a tiny
# LoRA in ComfyUI's own key format (diffusion_model.<module>.lora_A/B.weight) stands in for it.
SHIPPED_DISTILL_LORA = ("loras", "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors")
# Files of nodes the run replaces or removes: present (as placeholders) so the graph opens as in a
# complete install, never loaded.
PLACEHOLDERS = [("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"), ("clip_vision", "clip_vision_h.safetensors")]
LORA_TARGETS = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]


# --------------------------------------------------------------------------------------------
# frontends, browser, server
# --------------------------------------------------------------------------------------------


def _version_of_static(static: Path) -> str | None:
    """The version of a comfyui-frontend-package ``static`` folder, from the wheel's dist-info."""
    for info in sorted(static.parent.parent.glob("comfyui_frontend_package-*.dist-info")):
        return info.name[len("comfyui_frontend_package-"): -len(".dist-info")]
    return None


def _frontend_roots() -> dict[str, Path]:
    roots = {}
    for entry in filter(None, os.environ.get("EVERANIMATE_FRONTEND_ROOTS", "").split(os.pathsep)):
        version, _, folder = entry.partition("=") if "=" in entry else ("", "", entry)
        path = Path(folder)
        roots[version or _version_of_static(path) or path.name] = path
    return roots


def _shipped_version() -> str:
    try:
        from importlib.metadata import version

        return version("comfyui-frontend-package")
    except Exception:
        return "shipped"


FRONTENDS = ["shipped"] + sorted(set(EXPECTED_FRONTENDS) | set(_frontend_roots()))


@pytest.fixture(scope="session")
def chromium():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("Python Playwright is not importable in this environment (pip install playwright; no browser download needed)")
    exe = chromium_executable()
    if not exe:
        pytest.skip("no Chromium executable: install Debian's chromium or set EVERANIMATE_CHROMIUM")
    with launch_browser(exe) as browser:
        yield browser


@pytest.fixture(scope="module", params=FRONTENDS, ids=lambda f: f"fe-{_shipped_version() if f == 'shipped' else f}")
def frontend(request) -> tuple[str, Path | None]:
    """(expected version, static folder or None for the one ComfyUI serves by default)."""
    if request.param == "shipped":
        return _shipped_version(), None
    root = _frontend_roots().get(request.param)
    if root is None:
        pytest.skip(f"frontend {request.param}: give its static folder in EVERANIMATE_FRONTEND_ROOTS ({request.param}=DIR)")
    if not (root / "index.html").exists():
        pytest.skip(f"frontend {request.param}: {root} has no index.html (not a comfyui-frontend-package static folder)")
    return request.param, root


def _tiny_released_lora(unet: Path, dest: Path, rank: int = 4, key: str = "blocks.{b}.{t}.lora_{ab}.default.weight", seed: int = 0) -> None:
    """A LoRA for the tiny model (shapes read from its header), in the released key format unless
    ``key`` says otherwise."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd = {}
    with safe_open(str(unet), "pt") as f:
        keys = set(f.keys())
        prefix = next((p for p in ("", "model.diffusion_model.", "diffusion_model.") if f"{p}blocks.0.ffn.0.weight" in keys), "")
        blocks = sorted({int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))})
        for b in blocks:
            for t in LORA_TARGETS:
                out_f, in_f = f.get_slice(f"{prefix}blocks.{b}.{t}.weight").get_shape()
                sd[key.format(b=b, t=t, ab="A")] = torch.randn(rank, in_f, generator=g) * 0.01
                sd[key.format(b=b, t=t, ab="B")] = torch.randn(out_f, rank, generator=g) * 0.01
    save_file(sd, str(dest))


def _write_inputs(inp: Path) -> None:
    from PIL import Image

    from everanimate_core.tiny.synthdance import make_sequence
    from everanimate_core.infra.video import StreamingVideoWriter

    inp.mkdir(parents=True, exist_ok=True)
    seq = make_sequence(0, "test", 64, 64)
    Image.fromarray(seq.reference()).save(inp / "reference.png")
    for name in ("pose.mp4", "face.mp4"):  # face.mp4 only so the graph opens complete; the run drops it
        with StreamingVideoWriter(inp / name, 16, crf=0) as w:
            w.write(seq.pose(0, POSE_FRAMES))
    frames, figure = seq.render(0, POSE_FRAMES)  # replacement mode: the scene without the dancer, and where it was
    with StreamingVideoWriter(inp / "background.mp4", 16, crf=0) as w:
        w.write(np.where(figure[..., None], np.uint8(128), frames))
    with StreamingVideoWriter(inp / "mask.mp4", 16, crf=0) as w:
        w.write(np.repeat(figure[..., None], 3, axis=-1).astype(np.uint8) * 255)


@pytest.fixture(scope="module")
def ui_server(frontend, comfy_root, tiny_weights, tmp_path_factory):
    version, root = frontend
    tmp = tmp_path_factory.mktemp(f"ui_{version}")
    base = tmp / "base"
    models = base / "models"
    for folder, name in (SHIPPED_UNET, SHIPPED_VAE, SHIPPED_LORA, *PLACEHOLDERS):
        (models / folder).mkdir(parents=True, exist_ok=True)
    (models / SHIPPED_UNET[0] / SHIPPED_UNET[1]).symlink_to(tiny_weights["unet"])
    (models / SHIPPED_VAE[0] / SHIPPED_VAE[1]).symlink_to(tiny_weights["vae"])
    _tiny_released_lora(tiny_weights["unet"], models / SHIPPED_LORA[0] / SHIPPED_LORA[1])
    _tiny_released_lora(tiny_weights["unet"], models / SHIPPED_DISTILL_LORA[0] / SHIPPED_DISTILL_LORA[1],
                        key="diffusion_model.blocks.{b}.{t}.lora_{ab}.weight", seed=1)
    for folder, name in PLACEHOLDERS:
        (models / folder / name).write_bytes(b"placeholder: this test never loads it")
    _write_inputs(base / "input")
    srv = start_server(
        comfy_root, base, tiny_weights, front_end_root=root, user_directory=tmp / "user",
        database_url="sqlite:///:memory:", settings={"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False},
    )
    srv.frontend_version = version
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def object_info(ui_server) -> dict:
    return ui_server.get("/object_info")


@pytest.fixture
def page(chromium, ui_server):
    pg = ComfyPage(chromium, ui_server.url)
    try:
        pg.open()
        got = pg.frontend_version()
        if ui_server.frontend_version != "shipped":
            assert got == ui_server.frontend_version, f"expected frontend {ui_server.frontend_version}, the page says {got}"
        pg.version = got or ui_server.frontend_version
        yield pg
    finally:
        pg.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    env = os.environ.get("EVERANIMATE_SCREENSHOTS")
    folder = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------------------------
# what counts as an error in the page
# --------------------------------------------------------------------------------------------

# A newer frontend than the backend polls endpoints v0.3.64 does not have (version skew, not ours).
SKEW = ("/api/jobs", "/api/global_subgraphs", "[Jobs API]", "Failed to fetch queue", "JobsApiError")


def _url_of(entry: str) -> str | None:
    m = re.search(r"(?:@ |: (?:GET|POST|PUT|DELETE) |requestfailed: )(\S+)", entry)
    return m.group(1) if m else None


def page_errors(entries: list[str]) -> list[str]:
    """The errors that matter: drops what an offline machine and frontend/backend skew cause."""
    out = []
    for e in entries:
        url = _url_of(e)
        host = urlparse(url).hostname if url else None
        if host and host not in ("127.0.0.1", "localhost"):
            continue  # offline: release feed, model size probes on huggingface
        if "net::ERR_ABORTED" in e:
            continue  # a request the page itself cancelled (media preloads), not a failure
        if any(s in e for s in SKEW):
            continue
        out.append(e)
    return out


_ISSUES_JS = r"""
() => {
  const visible = (e) => !!(e.offsetParent !== null || e.getClientRects().length);
  const inNode = (e) => !!e.closest('.dom-widget, .comfy-markdown, .lg-node, [data-node-id]');
  const found = [];
  const pattern = /Missing Models|Missing Node|Missing Inputs|issues? found|Setup required|Error loading|Load Workflow Error/i;
  for (const e of document.querySelectorAll('[role=dialog], .p-dialog, .p-toast-message, [role=alert], span, div, h1, h2, h3')) {
    if (!visible(e) || inNode(e)) continue;
    if (e.children.length > 3) continue;
    const t = (e.innerText || '').trim();
    if (t && t.length < 200 && pattern.test(t)) found.push(t);
  }
  return Array.from(new Set(found));
}
"""

_MISSING_MODELS_JS = r"""
() => {
  const visible = (e) => !!(e.offsetParent !== null || e.getClientRects().length);
  const heads = Array.from(document.querySelectorAll('*')).filter((e) =>
    visible(e) && e.children.length === 0 && /^\s*(\d+\s*)?Missing Models\s*$/i.test(e.textContent));
  const out = [];
  for (const h of heads) {
    let p = h;
    for (let i = 0; i < 8 && p; i++, p = p.parentElement) {
      if (/\.safetensors|\.gguf|\.ckpt|\.pt\b/.test(p.innerText || '')) { out.push(p.innerText); break; }
    }
  }
  return out;
}
"""


def issues_shown(page: ComfyPage) -> list[str]:
    """Warnings and error dialogs the frontend shows outside the nodes (Missing Models/Nodes...)."""
    return page.js(_ISSUES_JS)


def missing_models_listed(page: ComfyPage, timeout: float = 20) -> str:
    """The text of the frontend's Missing Models list (1.27: a dialog; 1.5x: the issues panel,
    opened with the toast's "View details")."""
    end = time.time() + timeout
    while time.time() < end:
        texts = page.js(_MISSING_MODELS_JS)
        if texts:
            return "\n".join(texts)
        details = page.page.get_by_text("View details")
        if details.count():
            try:
                details.first.click(timeout=2000)
            except Exception:
                pass
        time.sleep(0.5)
    return ""


# --------------------------------------------------------------------------------------------
# comparing values
# --------------------------------------------------------------------------------------------


def same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def overlaps(nodes: list[dict]) -> list[str]:
    boxes = []
    for n in nodes:
        if n.get("box"):
            x, y, w, h = n["box"]
        else:
            x, y = n["pos"][0], n["pos"][1] - n["titleH"]
            w, h = n["size"][0], n["size"][1] + n["titleH"]
        boxes.append((n, x, y, x + w, y + h))
    out = []
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            dx, dy = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
            if dx > 0 and dy > 0:
                out.append(f"node {a['id']} {a['type']} and node {b['id']} {b['type']} overlap by {dx:.0f} x {dy:.0f} (as drawn, previews of the inputs loaded)")
    return out


MODEL_FILE = re.compile(r"\.(safetensors|gguf|ckpt|pt|pth|bin)$")


def model_entry_problems(nodes: list[dict]) -> list[str]:
    """properties.models entries are complete, and every widget naming a model file has one."""
    out = []
    for n in nodes:
        where = f"node {n['id']} {n['type']}"
        entries = n["properties"].get("models")
        listed = set()
        if entries is not None:
            if not isinstance(entries, list) or not entries:
                out.append(f"{where}: properties.models is not a non-empty list: {entries!r}")
                entries = []
            for m in entries:
                if not (isinstance(m, dict) and all(isinstance(m.get(k), str) and m.get(k) for k in ("name", "url", "directory"))):
                    out.append(f"{where}: model entry lacks name/url/directory: {m!r}")
                    continue
                if not m["url"].startswith("https://"):
                    out.append(f"{where}: model url is not https: {m['url']}")
                listed.add(m["name"])
        for name, value in n["widgets"]:
            if isinstance(value, str) and MODEL_FILE.search(value) and value not in listed:
                out.append(f"{where}: widget {name} = {value} has no properties.models entry (no Missing Models dialog for it)")
    return out


# --------------------------------------------------------------------------------------------
# editing and running in the page
# --------------------------------------------------------------------------------------------

_EDIT_JS = r"""
({ widgets, runName }) => {
  const app = window.app, g = app.graph, LG = window.LiteGraph;
  const linkOf = (id) => (g.links instanceof Map ? g.links.get(id) : g.links[id]);
  const byType = (t) => g._nodes.filter((n) => n.type === t);
  const log = [];
  // the text encoder chain -> the test pack's zero conditioning
  for (const enc of byType('CLIPTextEncode')) {
    const z = LG.createNode('EATestZeroTextConditioning');
    if (!z) throw new Error('EATestZeroTextConditioning is not registered');
    g.add(z);
    z.pos = [enc.pos[0], enc.pos[1]];
    const targets = [];
    for (const lid of [...((enc.outputs[0] && enc.outputs[0].links) || [])]) {
      const l = linkOf(lid);
      targets.push([g.getNodeById(l.target_id), l.target_slot]);
    }
    g.remove(enc);
    for (const [node, slot] of targets) z.connect(0, node, slot);
    log.push(`CLIPTextEncode ${enc.id} -> EATestZeroTextConditioning ${z.id} (${targets.length} links)`);
  }
  // whatever feeds a face input (Load Video, optionally through Get Video Components)
  const drop = new Set([...byType('CLIPLoader'), ...byType('CLIPVisionLoader')]);
  for (const n of g._nodes) {
    for (const inp of n.inputs || []) {
      if (!/face/.test(inp.name) || inp.link == null) continue;
      let src = g.getNodeById(linkOf(inp.link).origin_id);
      while (src) {
        drop.add(src);
        const up = (src.inputs || []).find((i) => i.link != null && src.type === 'GetVideoComponents');
        src = up ? g.getNodeById(linkOf(up.link).origin_id) : null;
      }
    }
  }
  for (const n of drop) { log.push(`removed ${n.type} ${n.id}`); g.remove(n); }
  // small settings on the EverAnimate nodes, as a user types them
  for (const n of g._nodes) {
    if (!String(n.type).startsWith('EverAnimate')) continue;
    const values = Object.assign({}, widgets, runName != null ? { run_name: runName } : {});
    for (const w of n.widgets || []) {
      if (!(w.name in values)) continue;
      w.value = values[w.name];
      if (w.callback) w.callback(w.value, app.canvas, n);
      log.push(`${n.type} ${n.id}.${w.name} = ${w.value}`);
    }
  }
  g.setDirtyCanvas(true, true);
  return log;
}
"""


def edit_to_tiny(page: ComfyPage, total_frames: int | None, run_name: str | None = None) -> list[str]:
    widgets = dict(SMALL)
    if total_frames is not None:
        widgets["total_frames"] = total_frames
    return page.js(_EDIT_JS, {"widgets": widgets, "runName": run_name})


def seed_widgets(page: ComfyPage) -> dict:
    return {
        f"{n['id']}.{name}": value
        for n in page.nodes()
        for name, value in n["widgets"]
        if name in ("seed", "noise_seed", "control_after_generate")
    }


def wait_new_prompt(server, known: set, timeout: float = 1800) -> tuple[str, dict]:
    """The first prompt id not in ``known`` that finished (history entry with a status)."""
    end = time.time() + timeout
    while time.time() < end:
        for pid, entry in server.get("/history").items():
            if pid not in known and entry.get("status", {}).get("completed") is not None:
                return pid, entry
        if server.proc.poll() is not None:
            raise RuntimeError("ComfyUI exited:\n" + server.log_text()[-4000:])
        time.sleep(0.5)
    raise TimeoutError(f"no new prompt finished in {timeout} s")


def mp4_outputs(server, hist: dict) -> list[Path]:
    files = []
    for out in hist["outputs"].values():
        for item in out.get("images", []) + out.get("videos", []) + out.get("gifs", []):
            if isinstance(item, dict) and item.get("filename", "").endswith(".mp4"):
                files.append(server.base / item.get("type", "output") / item.get("subfolder", "") / item["filename"])
    return files


def decoded_frames(path: Path) -> np.ndarray:
    from everanimate_core.infra.video import read_video

    return np.asarray(read_video(path))


def mp4_files_byte_identical(a: Path, b: Path) -> bool:
    """Whether two MP4 files are the same bytes (the strict resume criterion, not asserted yet:
    see REQUIRE_BYTE_IDENTICAL_RESUME)."""
    return a.read_bytes() == b.read_bytes()


def _expected_frames(wf: dict) -> int:
    has_total = any(
        n["type"] == "EverAnimateChunkSampler" for n in wf["nodes"]
    )
    return THREE_CHUNK_TOTAL if has_total else POSE_FRAMES


def _has_long_animation(path: Path) -> bool:
    return any(n["type"] == "EverAnimateLongAnimation" for n in json.loads(path.read_text())["nodes"])


# Uninterrupted small runs per (frontend, workflow): (mp4, run folder or None)
_UNINTERRUPTED: dict[tuple[str, str], tuple[Path, Path | None]] = {}


def _runs_dir(server) -> Path:
    return server.base / "output" / "everanimate" / "runs"


def _run_folders(server) -> dict[Path, float]:
    runs = _runs_dir(server)
    return {p: p.stat().st_mtime for p in runs.glob("*/progress.json")} if runs.exists() else {}


# --------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_dropped_workflow_opens_with_the_intended_widgets(page, ui_server, object_info, workflow, screenshots):
    from workflows.schema import ui_widget_items

    wf = json.loads(workflow.read_text())
    api = json.loads((REPO / "workflows" / "api" / workflow.name).read_text())
    mark = page.mark()
    loaded = page.drop_workflow(workflow)
    nodes = page.nodes()
    by_id = {str(n["id"]): n for n in nodes}  # 1.58.1 gives a dropped file's nodes string ids
    problems: list[str] = [] if loaded else [f"the page's graph never held the file's nodes after the drop: {[(n['id'], n['type']) for n in nodes]}"]

    # the screenshot first, so it exists even when an assertion below fails
    page.fit_view()
    shot = screenshots / f"{workflow.stem}__{page.version}.png"
    page.screenshot_canvas(shot)

    problems += [f"page error after the drop: {e}" for e in page_errors(page.errors_since(mark))]
    problems += [f"the frontend shows: {t!r}" for t in issues_shown(page)]
    unknown = page.js("(types) => types.filter((t) => !(t in window.LiteGraph.registered_node_types))", sorted({n["type"] for n in wf["nodes"]}))
    problems += [f"node type not registered in the frontend: {t}" for t in unknown]
    if len(nodes) != len(wf["nodes"]):
        problems.append(f"{len(nodes)} nodes in the page, {len(wf['nodes'])} in the file")

    # 1. every widget, by name and value, in the frontend's order
    for nj in wf["nodes"]:
        got = by_id.get(str(nj["id"]))
        if got is None:
            problems.append(f"node {nj['id']} {nj['type']} is not in the page")
            continue
        try:
            want = [list(item) for item in ui_widget_items(nj, object_info)]
        except Exception as e:  # noqa: BLE001 - a count mismatch is a finding, not a crash
            problems.append(f"node {nj['id']} {nj['type']}: ui_widget_items: {e}")
            continue
        if not same_value(got["widgets"], want):
            diff = [f"{i}: page {g!r} vs file {w!r}" for i, (g, w) in enumerate(zip(got["widgets"], want)) if not same_value(g, w)]
            if len(got["widgets"]) != len(want):
                diff.append(f"{len(got['widgets'])} widgets in the page, {len(want)} intended")
            problems.append(f"node {nj['id']} {nj['type']} widgets differ:\n    " + "\n    ".join(diff[:8]))

    # 2. the seed controls are fixed (a resumable run must not get a new seed on queue)
    for n in nodes:
        for name, value in n["widgets"]:
            if name == "control_after_generate" and value != "fixed":
                problems.append(f"node {n['id']} {n['type']}: control_after_generate = {value!r}, not 'fixed'")

    # 3. the prompt the frontend sends equals the API twin
    prompt = page.prompt()
    if set(prompt) != set(api):
        problems.append(f"prompt node ids {sorted(prompt)} != API twin {sorted(api)}")
    for nid in sorted(set(prompt) & set(api), key=int):
        p, a = dict(prompt[nid]), api[nid]
        declared = {k for section in object_info.get(p["class_type"], {}).get("input", {}).values() for k in section}
        # 1.58.1 sends its video preview widget ('video-preview': '') too; the backend ignores
        # inputs a node does not declare, so only declared inputs are compared
        p["inputs"] = {k: v for k, v in p["inputs"].items() if k in declared or k in a["inputs"]}
        if p["class_type"] != a["class_type"]:
            problems.append(f"prompt node {nid}: {p['class_type']} vs API twin {a['class_type']}")
        elif not same_value(p["inputs"], a["inputs"]):
            keys = sorted(set(p["inputs"]) | set(a["inputs"]))
            diff = [f"{k}: page {p['inputs'].get(k, '<absent>')!r} vs twin {a['inputs'].get(k, '<absent>')!r}" for k in keys if not same_value(p["inputs"].get(k), a["inputs"].get(k))]
            problems.append(f"prompt node {nid} {p['class_type']} inputs differ:\n    " + "\n    ".join(diff[:8]))

    # 4. layout and model download entries
    problems += overlaps(nodes)
    problems += model_entry_problems(nodes)

    assert not problems, f"{workflow.name} in frontend {page.version} (screenshot {shot}):\n" + "\n".join(problems)
    assert shot.exists() and shot.stat().st_size > 0


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_small_when_queued_from_the_frontend(page, ui_server, workflow):
    wf = json.loads(workflow.read_text())
    expected = _expected_frames(wf)
    page.drop_workflow(workflow)
    edits = edit_to_tiny(page, THREE_CHUNK_TOTAL if expected == THREE_CHUNK_TOTAL else None)
    seeds = seed_widgets(page)
    folders = _run_folders(ui_server)
    known = set(ui_server.get("/history"))
    mark = page.mark()
    page.queue()
    pid, hist = wait_new_prompt(ui_server, known)
    assert hist["status"]["status_str"] == "success", (edits, json.dumps(hist["status"])[:3000])
    outs = mp4_outputs(ui_server, hist)
    assert outs, hist["outputs"]
    frames = decoded_frames(outs[0])
    assert frames.shape[0] == expected, f"{outs[0].name}: {frames.shape[0]} frames, the driving length is {expected}"
    time.sleep(1.0)  # the control is applied after the queue
    assert seed_widgets(page) == seeds, "the seed changed after the queue: its control is not fixed"
    errors = page_errors(page.errors_since(mark))
    assert not errors, errors
    run = next((p.parent for p, t in _run_folders(ui_server).items() if folders.get(p) != t), None)
    _UNINTERRUPTED[(ui_server.frontend_version, workflow.stem)] = (outs[0], run)


@pytest.mark.parametrize("workflow", [p for p in WORKFLOWS if _has_long_animation(p)], ids=lambda p: p.stem)
def test_cancelled_run_resumes_when_queued_again_from_the_frontend(page, ui_server, workflow):
    run_name = f"ui_resume_{workflow.stem}"
    run_dir = _runs_dir(ui_server) / run_name
    shutil.rmtree(run_dir, ignore_errors=True)
    page.drop_workflow(workflow)
    edit_to_tiny(page, None, run_name=run_name)

    known = set(ui_server.get("/history"))
    page.queue()
    deadline = time.time() + 900
    progress = run_dir / "progress.json"
    while time.time() < deadline:
        if progress.exists():
            try:
                if len(json.loads(progress.read_text())["finished_chunks"]) >= 1:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.2)
    else:
        pytest.fail("no chunk finished in 900 s")
    running = ui_server.get("/queue")["queue_running"]
    page.interrupt(running[0][1] if running else None)
    pid, first = wait_new_prompt(ui_server, known)
    assert first["status"]["status_str"] == "error", "the first attempt was interrupted"
    assert any(m[0] == "execution_interrupted" for m in first["status"].get("messages", [])), first["status"]
    finished = len(json.loads(progress.read_text())["finished_chunks"])
    assert finished >= 1

    log_mark = len(ui_server.log_text())
    known = set(ui_server.get("/history"))
    page.queue()
    _, second = wait_new_prompt(ui_server, known)
    assert second["status"]["status_str"] == "success", json.dumps(second["status"])[:3000]
    log = ui_server.log_text()[log_mark:]
    chunks_run = [json.loads(m.group(1))["chunks_run"] for m in re.finditer(r"EverAnimate stats: (\{.*\})", log)]
    resumed = re.search(r"resuming after chunk (\d+) of (\d+)", log)
    assert resumed, "the server log does not say it resumed:\n" + log[-3000:]
    done, total = int(resumed.group(1)), int(resumed.group(2))
    assert done >= finished >= 1
    assert chunks_run and chunks_run[-1] == total - done, ("only the unfinished chunks are sampled", chunks_run, done, total)
    got_mp4 = mp4_outputs(ui_server, second)[0]
    got = decoded_frames(got_mp4)
    assert got.shape[0] == POSE_FRAMES

    ref = _UNINTERRUPTED.get((ui_server.frontend_version, workflow.stem))
    if ref is None:
        pytest.skip("no uninterrupted run of this workflow in this session to compare with (run the whole module)")
    ref_mp4, ref_run = ref
    if ref_run is not None:
        segments = sorted(p.name for p in ref_run.glob("frames_*.mkv"))
        assert segments == sorted(p.name for p in run_dir.glob("frames_*.mkv")) and segments
        for name in segments:
            assert np.array_equal(decoded_frames(run_dir / name), decoded_frames(ref_run / name)), f"chunk frames {name} differ"
    expected = decoded_frames(ref_mp4)
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert diff.mean() < 1.5 and diff.max() <= 16, ("resumed MP4 differs beyond codec noise", float(diff.mean()), int(diff.max()))
    if REQUIRE_BYTE_IDENTICAL_RESUME:
        assert mp4_files_byte_identical(got_mp4, ref_mp4)


def test_missing_lora_is_named_by_the_frontend(chromium, ui_server):
    lora = ui_server.base / "models" / SHIPPED_LORA[0] / SHIPPED_LORA[1]
    hidden = ui_server.base / "models" / f"hidden_{SHIPPED_LORA[1]}"
    workflow = REPO / "example_workflows" / "everanimate_long_animation.json"
    lora.rename(hidden)
    pg = ComfyPage(chromium, ui_server.url)
    try:
        pg.open()
        pg.drop_workflow(workflow, settle=3)
        listed = missing_models_listed(pg)
    finally:
        pg.close()
        hidden.rename(lora)
    assert SHIPPED_LORA[1] in listed, f"the Missing Models list does not name {SHIPPED_LORA[1]}: {listed!r}"
    present = [SHIPPED_UNET[1], SHIPPED_VAE[1], SHIPPED_DISTILL_LORA[1]] + [name for _, name in PLACEHOLDERS]
    assert not [n for n in present if n in listed], f"files that are present are listed as missing: {listed!r}"


def test_a_newly_placed_everanimate_node_starts_with_a_fixed_seed(chromium, ui_server):
    """The pack's frontend extension (web/everanimate.js): the frontend would default a new seed's
    control to randomize, and re-queueing after a Cancel would then start a new run instead of
    resuming. A core node with a seed keeps the frontend's own default."""
    pg = ComfyPage(chromium, ui_server.url)
    try:
        pg.open()
        controls = pg.js(
            """() => {
              const out = {};
              for (const type of ['EverAnimateLongAnimation', 'EverAnimateChunkSampler', 'KSampler']) {
                const node = window.LiteGraph.createNode(type);
                window.app.graph.add(node);
                const w = (node.widgets || []).find((x) => x.name === 'control_after_generate');
                out[type] = w ? w.value : null;
              }
              return out;
            }"""
        )
    finally:
        pg.close()
    assert controls["EverAnimateLongAnimation"] == "fixed" and controls["EverAnimateChunkSampler"] == "fixed", controls
    assert controls["KSampler"] == "randomize", f"other packs' nodes are left alone: {controls}"
