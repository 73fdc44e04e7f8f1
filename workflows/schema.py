"""Workflow JSON from node schemas: build UI-format (0.4) and API-format graphs, and check them.

The schemas are ComfyUI's /object_info entries. ``tests/data/object_info.json`` holds a snapshot of
the nodes our workflows use (core nodes + this pack), refreshed from a live ComfyUI by
``python workflows/build.py --object-info URL`` and checked against the live server by the
integration tests. Pure Python: no ComfyUI import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # nodes that live in the web frontend only


def input_specs(info: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, optional) of a node's inputs in ComfyUI's order."""
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            typ = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, typ, opts, section == "optional"))
    return out


def is_widget(typ: Any, opts: dict) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def widget_type(typ: Any) -> str:
    return "COMBO" if isinstance(typ, list) else typ


def combo_options(typ: Any, opts: dict) -> list | None:
    if isinstance(typ, list):
        return typ
    return opts.get("options")


def has_upload_widget(opts: dict) -> bool:
    """Load Image / Load Video add an upload button whose value ('image') follows the file name."""
    return bool(opts.get("image_upload") or opts.get("video_upload"))


# --------------------------------------------------------------------------------------------
# The frontend's widget rules (read in comfyui-frontend-package 1.27.10 and 1.58.1)
# --------------------------------------------------------------------------------------------

SEED_NAMES = ("seed", "noise_seed")  # INT inputs that get a control widget when the schema is silent
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
SHIPPED_CONTROL = "fixed"  # re-queueing a shipped workflow must resume its run, not reseed it


def has_control_widget(name: str, typ: Any, opts: dict) -> bool:
    """Whether the frontend adds a control_after_generate combo right after this widget.

    INT: when the schema sets control_after_generate, or leaves it unset and the input is named
    seed/noise_seed. COMBO: only when the schema sets it. A FLOAT with it, or a string value, is
    refused: 1.58.1 honours both, 1.27.10 ignores the first and takes the second as the control
    widget's *name*, so no file can load the same in both.
    """
    t = widget_type(typ)
    cag = opts.get("control_after_generate")
    if isinstance(cag, str):
        raise ValueError(f"{name}: a string control_after_generate means different things to the frontends")
    if t == "INT":
        return bool(cag) if cag is not None else name in SEED_NAMES
    if t == "FLOAT" and cag:
        raise ValueError(f"{name}: FLOAT control_after_generate is honoured by newer frontends only")
    return t == "COMBO" and bool(cag)


@dataclass(frozen=True)
class FrontendWidget:
    """One widget as the frontend creates it: ``kind`` is value, control or upload."""

    name: str
    input: str
    kind: str
    typ: Any = None
    opts: dict = field(default_factory=dict)


def frontend_widgets(info: dict) -> list[FrontendWidget]:
    """A node's widgets in the order the frontend creates them, which is the order of its
    ``widgets_values``: every widget input (linked or not: the frontend keeps the widget), then the
    upload button after a file combo with upload, the control combo after a seed-like INT."""
    out = []
    for name, typ, opts, _ in input_specs(info):
        if not is_widget(typ, opts):
            continue
        out.append(FrontendWidget(name, name, "value", typ, opts))
        if has_upload_widget(opts):
            out.append(FrontendWidget("upload", name, "upload"))
        if has_control_widget(name, typ, opts):
            out.append(FrontendWidget("control_after_generate", name, "control"))
    return out


def ui_widget_items(ui_node: dict, schemas: dict) -> list[tuple[str, Any]]:
    """(widget name, value) pairs of one UI-workflow node, named as the frontend names its widgets:
    what a test compares with ``node.widgets`` in the browser."""
    values = list(ui_node.get("widgets_values") or [])
    if ui_node["type"] in FRONTEND_ONLY:
        return [("text", v) for v in values]
    widgets = frontend_widgets(schemas[ui_node["type"]])
    if len(widgets) != len(values):
        raise ValueError(f"node {ui_node.get('id')} {ui_node['type']}: {len(values)} widget values for {len(widgets)} widgets")
    return [(w.name, v) for w, v in zip(widgets, values)]


def accepts(input_type: Any, link_type: str) -> bool:
    """Whether an input socket takes a link of this type ("VIDEO,IMAGE" takes either; "*" any)."""
    t = widget_type(input_type)
    return t == "*" or link_type in str(t).split(",")


def check_widget_value(node_type: str, name: str, typ: Any, opts: dict, value: Any) -> list[str]:
    """Problems with one widget value (empty list when it fits the schema)."""
    t = widget_type(typ)
    where = f"{node_type}.{name}"
    if t == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: expected INT, got {value!r}"]
    elif t == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [f"{where}: expected FLOAT, got {value!r}"]
    elif t == "BOOLEAN":
        if not isinstance(value, bool):
            return [f"{where}: expected BOOLEAN, got {value!r}"]
    elif t == "STRING":
        if not isinstance(value, str):
            return [f"{where}: expected STRING, got {value!r}"]
    if t in ("INT", "FLOAT") and isinstance(value, (int, float)):
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            return [f"{where}: {value} outside [{opts.get('min')}, {opts.get('max')}]"]
    if t == "COMBO":
        options = combo_options(typ, opts)
        # file lists depend on the user's folders; fixed option lists must contain the value
        if options and not opts.get("image_upload") and not opts.get("video_upload") and name not in FILE_WIDGETS:
            if value not in options:
                return [f"{where}: {value!r} is not one of {options}"]
        if isinstance(value, str) and ("\\" in value or value.startswith("/") or (len(value) > 1 and value[1] == ":")):
            return [f"{where}: {value!r} is an absolute or backslash path"]
    return []


FILE_WIDGETS = {"unet_name", "vae_name", "clip_name", "lora_name", "image", "file", "ckpt_name"}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict
    inputs: dict  # name -> (node, slot)
    title: str | None = None
    pos: tuple[int, int] = (0, 0)
    size: tuple[int, int] | None = None
    models: list[dict] = field(default_factory=list)  # {name, url, directory}: the Missing Models dialog
    color: str | None = None


@dataclass
class Group:
    title: str
    bounding: tuple[int, int, int, int]
    color: str = "#3f789e"


# LiteGraph's geometry (litegraph defaults the frontends keep): the title bar sits above pos.
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24  # 20 px widget + 4 px spacing
GROUP_PADDING = 10
GROUP_TITLE = 50


@dataclass
class Graph:
    """A workflow built node by node; ``ui()`` and ``api()`` render it in both formats.

    Widget values follow the frontend's rules (``frontend_widgets``), so a file dropped into the
    frontend shows exactly the values given here; seed controls ship ``fixed``.
    """

    schemas: dict
    nodes: list[Node] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)

    def add(self, node_type: str, title: str | None = None, pos=(0, 0), size=None, models=None, color=None, **kwargs) -> Node:
        """Add a node; keyword args are widget values or (node, output_slot) links."""
        widgets, inputs = {}, {}
        for k, v in kwargs.items():
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], Node):
                inputs[k] = v
            else:
                widgets[k] = v
        if node_type not in FRONTEND_ONLY:
            info = self.schemas[node_type]
            names = {w.name for w in frontend_widgets(info)} | {n for n, *_ in input_specs(info)}
            unknown = set(widgets) - names
            if unknown:
                raise ValueError(f"{node_type} has no input(s) {sorted(unknown)}")
            linked_widgets = {w.input for w in frontend_widgets(info)} & set(inputs)
            if linked_widgets:
                raise ValueError(f"{node_type}: widget inputs {sorted(linked_widgets)} cannot be linked by this generator")
        n = Node(len(self.nodes) + 1, node_type, widgets, inputs, title, tuple(pos), tuple(size) if size else None, list(models or []), color)
        self.nodes.append(n)
        return n

    def group(self, title: str, nodes: list[Node], color: str = "#3f789e") -> Group:
        """A group drawn around the nodes' bounding boxes (title bar included)."""
        boxes = [self.bounding(n) for n in nodes]
        x0 = min(b[0] for b in boxes) - GROUP_PADDING
        y0 = min(b[1] for b in boxes) - GROUP_TITLE
        x1 = max(b[0] + b[2] for b in boxes) + GROUP_PADDING
        y1 = max(b[1] + b[3] for b in boxes) + GROUP_PADDING
        g = Group(title, (x0, y0, x1 - x0, y1 - y0), color)
        self.groups.append(g)
        return g

    # -- geometry ------------------------------------------------------------------------------

    def socket_inputs(self, n: Node) -> list[tuple[str, Any, bool]]:
        if n.type in FRONTEND_ONLY:
            return []
        return [(name, typ, optional) for name, typ, opts, optional in input_specs(self.schemas[n.type]) if not is_widget(typ, opts)]

    def size_of(self, n: Node) -> tuple[int, int]:
        """The node's body size: as given, else a generous estimate of what the frontend computes
        (the frontend grows a node to its computed size, never shrinks it, so an estimate at or
        above it is the size the user sees)."""
        if n.size:
            return n.size
        if n.type in FRONTEND_ONLY:
            return (420, 220)
        widgets = frontend_widgets(self.schemas[n.type])
        rows = max(len(self.socket_inputs(n)), len(self._output_types(n)))
        height = SLOT_HEIGHT * rows + WIDGET_HEIGHT * len(widgets) + 20
        for w in widgets:
            if w.kind == "value" and (w.opts.get("multiline") or (w.opts.get("video_upload") or w.opts.get("image_upload"))):
                height += 200  # text boxes and image/video previews
        return (400, max(60, height))

    def bounding(self, n: Node) -> tuple[int, int, int, int]:
        w, h = self.size_of(n)
        return (n.pos[0], n.pos[1] - TITLE_HEIGHT, w, h + TITLE_HEIGHT)

    def overlaps(self) -> list[tuple[int, int]]:
        """Pairs of node ids whose bounding boxes intersect."""
        out = []
        for i, a in enumerate(self.nodes):
            ax, ay, aw, ah = self.bounding(a)
            for b in self.nodes[i + 1 :]:
                bx, by, bw, bh = self.bounding(b)
                if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                    out.append((a.id, b.id))
        return out

    # -- rendering -----------------------------------------------------------------------------

    def _value(self, n: Node, name: str, typ: Any, opts: dict) -> Any:
        if name in n.widgets:
            return n.widgets[name]
        if "default" in opts:
            return opts["default"]
        options = combo_options(typ, opts)
        return options[0] if options else None

    def _widget_values(self, n: Node) -> list:
        if n.type in FRONTEND_ONLY:
            return [n.widgets["text"]]
        values = []
        for w in frontend_widgets(self.schemas[n.type]):
            if w.kind == "value":
                values.append(self._value(n, w.name, w.typ, w.opts))
            elif w.kind == "upload":
                values.append("image")
            else:
                values.append(n.widgets.get("control_after_generate", SHIPPED_CONTROL))
        return values

    def _output_types(self, n: Node) -> list[str]:
        return [] if n.type in FRONTEND_ONLY else list(self.schemas[n.type]["output"])

    def ui(self) -> dict:
        links = []
        link_of: dict[tuple[int, str], int] = {}
        for n in self.nodes:
            for name, (src, slot) in n.inputs.items():
                lid = len(links) + 1
                links.append([lid, src.id, slot, n.id, None, self._output_types(src)[slot]])
                link_of[(n.id, name)] = lid
        ui_nodes = []
        for order, n in enumerate(self.nodes):
            inputs = []
            for name, typ, optional in self.socket_inputs(n):
                lid = link_of.get((n.id, name))
                if lid is None and not optional:
                    raise ValueError(f"{n.type} (node {n.id}) needs its '{name}' input connected")
                if lid is None:
                    continue
                if not accepts(typ, links[lid - 1][5]):
                    raise ValueError(f"{n.type}.{name} takes {typ}, not {links[lid - 1][5]}")
                links[lid - 1][4] = len(inputs)
                inputs.append({"name": name, "type": widget_type(typ), "link": lid})
            outputs = []
            for slot, typ in enumerate(self._output_types(n)):
                out_links = [lk[0] for lk in links if lk[1] == n.id and lk[2] == slot]
                names = self.schemas[n.type].get("output_name") or self._output_types(n)
                outputs.append({"name": names[slot], "type": typ, "links": out_links or None, "slot_index": slot})
            properties = {"Node name for S&R": n.type}
            if n.models:
                properties["models"] = n.models
            node = {
                "id": n.id,
                "type": n.type,
                "pos": list(n.pos),
                "size": list(self.size_of(n)),
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": properties,
                "widgets_values": self._widget_values(n),
            }
            if n.title:
                node["title"] = n.title
            if n.color:
                node["color"] = n.color
            ui_nodes.append(node)
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": ui_nodes,
            "links": links,
            "groups": [
                {"id": i + 1, "title": g.title, "bounding": list(g.bounding), "color": g.color, "font_size": 24, "flags": {}}
                for i, g in enumerate(self.groups)
            ],
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [40, 80]}},
            "version": 0.4,
        }

    def api(self) -> dict:
        out = {}
        for n in self.nodes:
            if n.type in FRONTEND_ONLY:
                continue
            inputs: dict[str, Any] = {}
            for name, typ, opts, optional in input_specs(self.schemas[n.type]):
                if name in n.inputs:
                    src, slot = n.inputs[name]
                    inputs[name] = [str(src.id), slot]
                elif is_widget(typ, opts):
                    inputs[name] = self._value(n, name, typ, opts)
            out[str(n.id)] = {"class_type": n.type, "inputs": inputs, "_meta": {"title": n.title or n.type}}
        return out


def check_ui_workflow(wf: dict, schemas: dict) -> list[str]:
    """Problems of a UI-format workflow against node schemas and the frontend's widget rules:
    unknown node types, widget counts (control and upload widgets included), types and control
    values, link endpoints and types, required inputs left unconnected, model entries."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in wf["nodes"]}
    for n in wf["nodes"]:
        t = n["type"]
        if t in FRONTEND_ONLY:
            continue
        if t not in schemas:
            problems.append(f"node {n['id']}: unknown node type {t!r}")
            continue
        linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
        for name, typ, opts, optional in input_specs(schemas[t]):
            if not is_widget(typ, opts) and not optional and name not in linked:
                problems.append(f"node {n['id']} {t}: required input {name!r} is not connected")
        widgets = frontend_widgets(schemas[t])
        values = n.get("widgets_values", [])
        if len(values) != len(widgets):
            problems.append(f"node {n['id']} {t}: {len(values)} widget values, the frontend makes {len(widgets)} widgets")
            continue
        for w, v in zip(widgets, values):
            if w.kind == "value":
                problems += [f"node {n['id']} {p}" for p in check_widget_value(t, w.name, w.typ, w.opts, v)]
            elif w.kind == "control" and v not in CONTROL_VALUES:
                problems.append(f"node {n['id']} {t}: control of {w.input!r} is {v!r}, not one of {CONTROL_VALUES}")
        for m in n.get("properties", {}).get("models", []):
            if not (isinstance(m, dict) and {"name", "url", "directory"} <= set(m) and str(m["url"]).startswith("https://")):
                problems.append(f"node {n['id']} {t}: model entry {m!r} needs name, https url and directory")
    for lid, src, sslot, dst, dslot, typ in wf["links"]:
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid}: missing endpoint")
            continue
        s, d = nodes[src], nodes[dst]
        if s["type"] in schemas:
            out_types = schemas[s["type"]]["output"]
            if sslot >= len(out_types) or out_types[sslot] != typ:
                problems.append(f"link {lid}: {s['type']} output {sslot} is not {typ}")
        if d["type"] in schemas:
            ins = {name: tp for name, tp, _, _ in input_specs(schemas[d["type"]])}
            dst_inputs = d.get("inputs", [])
            if dslot >= len(dst_inputs):
                problems.append(f"link {lid}: {d['type']} has no input slot {dslot}")
                continue
            iname = dst_inputs[dslot]["name"]
            if dst_inputs[dslot].get("link") != lid:
                problems.append(f"link {lid}: {d['type']}.{iname} does not point back to it")
            if iname not in ins or not accepts(ins[iname], typ):
                problems.append(f"link {lid}: {d['type']}.{iname} takes {ins.get(iname)}, link carries {typ}")
    return problems


def check_api_workflow(api: dict, schemas: dict) -> list[str]:
    """Problems of an API-format prompt: unknown types, missing required inputs, link types."""
    problems = []
    for nid, node in api.items():
        t = node["class_type"]
        if t not in schemas:
            problems.append(f"{nid}: unknown node type {t!r}")
            continue
        for name, typ, opts, optional in input_specs(schemas[t]):
            v = node["inputs"].get(name)
            if v is None:
                if not optional:
                    problems.append(f"{nid} {t}: required input {name!r} missing")
                continue
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                src = api.get(v[0])
                if src is None:
                    problems.append(f"{nid} {t}.{name}: links to missing node {v[0]}")
                elif src["class_type"] in schemas and not accepts(typ, schemas[src["class_type"]]["output"][v[1]]):
                    problems.append(f"{nid} {t}.{name}: takes {widget_type(typ)}, gets {schemas[src['class_type']]['output'][v[1]]}")
            elif is_widget(typ, opts):
                problems += [f"{nid} {p}" for p in check_widget_value(t, name, typ, opts, v)]
            else:
                problems.append(f"{nid} {t}.{name}: socket input given a literal {v!r}")
    return problems
