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


@dataclass
class Graph:
    """A workflow built node by node; ``ui()`` and ``api()`` render it in both formats."""

    schemas: dict
    nodes: list[Node] = field(default_factory=list)

    def add(self, node_type: str, title: str | None = None, pos=(0, 0), **kwargs) -> Node:
        """Add a node; keyword args are widget values or (node, output_slot) links."""
        widgets, inputs = {}, {}
        for k, v in kwargs.items():
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], Node):
                inputs[k] = v
            else:
                widgets[k] = v
        n = Node(len(self.nodes) + 1, node_type, widgets, inputs, title, pos)
        self.nodes.append(n)
        return n

    def _widget_values(self, n: Node) -> list:
        if n.type in FRONTEND_ONLY:
            return [n.widgets["text"]]
        values = []
        for name, typ, opts, optional in input_specs(self.schemas[n.type]):
            if not is_widget(typ, opts) or name in n.inputs:
                continue
            if name in n.widgets:
                v = n.widgets[name]
            elif "default" in opts:
                v = opts["default"]
            else:
                options = combo_options(typ, opts)
                v = options[0] if options else None
            values.append(v)
            if has_upload_widget(opts):
                values.append("image")
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
            if n.type not in FRONTEND_ONLY:
                for name, typ, opts, optional in input_specs(self.schemas[n.type]):
                    if is_widget(typ, opts) and name not in n.inputs:
                        continue
                    lid = link_of.get((n.id, name))
                    if lid is None and not optional:
                        raise ValueError(f"{n.type} (node {n.id}) needs its '{name}' input connected")
                    if lid is None:
                        continue
                    slot = len(inputs)
                    links[lid - 1][4] = slot
                    inputs.append({"name": name, "type": widget_type(typ), "link": lid})
            outputs = []
            for slot, typ in enumerate(self._output_types(n)):
                out_links = [lk[0] for lk in links if lk[1] == n.id and lk[2] == slot]
                names = self.schemas[n.type].get("output_name") or self._output_types(n)
                outputs.append({"name": names[slot], "type": typ, "links": out_links or None, "slot_index": slot})
            node = {
                "id": n.id,
                "type": n.type,
                "pos": list(n.pos),
                "size": [400, 200] if n.type not in FRONTEND_ONLY else [420, 220],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": {"Node name for S&R": n.type},
                "widgets_values": self._widget_values(n),
            }
            if n.title:
                node["title"] = n.title
            ui_nodes.append(node)
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": ui_nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
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
                    if name in n.widgets:
                        inputs[name] = n.widgets[name]
                    elif "default" in opts:
                        inputs[name] = opts["default"]
                    else:
                        options = combo_options(typ, opts)
                        inputs[name] = options[0] if options else None
            out[str(n.id)] = {"class_type": n.type, "inputs": inputs, "_meta": {"title": n.title or n.type}}
        return out


def check_ui_workflow(wf: dict, schemas: dict) -> list[str]:
    """Problems of a UI-format workflow against node schemas: unknown node types, widget counts and
    types, link endpoints and types, required inputs left unconnected."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in wf["nodes"]}
    for n in wf["nodes"]:
        t = n["type"]
        if t in FRONTEND_ONLY:
            continue
        if t not in schemas:
            problems.append(f"node {n['id']}: unknown node type {t!r}")
            continue
        specs = input_specs(schemas[t])
        linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
        expected = []
        for name, typ, opts, optional in specs:
            if is_widget(typ, opts) and name not in linked:
                expected.append((name, typ, opts))
                if has_upload_widget(opts):
                    expected.append((name + "#upload", "STRING", {}))
            elif not is_widget(typ, opts) and not optional and name not in linked:
                problems.append(f"node {n['id']} {t}: required input {name!r} is not connected")
        values = n.get("widgets_values", [])
        if len(values) != len(expected):
            problems.append(f"node {n['id']} {t}: {len(values)} widget values, schema has {len(expected)}")
            continue
        for (name, typ, opts), v in zip(expected, values):
            if not name.endswith("#upload"):
                problems += [f"node {n['id']} {p}" for p in check_widget_value(t, name, typ, opts, v)]
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
            ins = {name: widget_type(tp) for name, tp, _, _ in input_specs(schemas[d["type"]])}
            dst_inputs = d.get("inputs", [])
            if dslot >= len(dst_inputs):
                problems.append(f"link {lid}: {d['type']} has no input slot {dslot}")
                continue
            iname = dst_inputs[dslot]["name"]
            if dst_inputs[dslot].get("link") != lid:
                problems.append(f"link {lid}: {d['type']}.{iname} does not point back to it")
            if ins.get(iname) != typ:
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
                elif src["class_type"] in schemas and schemas[src["class_type"]]["output"][v[1]] != widget_type(typ):
                    problems.append(f"{nid} {t}.{name}: takes {widget_type(typ)}, gets {schemas[src['class_type']]['output'][v[1]]}")
            elif is_widget(typ, opts):
                problems += [f"{nid} {p}" for p in check_widget_value(t, name, typ, opts, v)]
            else:
                problems.append(f"{nid} {t}.{name}: socket input given a literal {v!r}")
    return problems
