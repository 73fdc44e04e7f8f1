// EverAnimate: a newly placed EverAnimate node starts with its seed control on "fixed".
//
// The frontend gives every seed widget a control_after_generate combo that defaults to
// "randomize" and applies it after each queue. For EverAnimate a new seed means a new run: queueing
// the same graph again after a Cancel would start over instead of resuming from the run folder.
// Values loaded from a workflow file are applied after this hook, so files keep their own choice.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "EverAnimate.FixedSeedControl",
  nodeCreated(node) {
    const type = String(node.comfyClass ?? node.type ?? "");
    if (!type.startsWith("EverAnimate")) return;
    for (const widget of node.widgets ?? []) {
      if (widget.name === "control_after_generate") widget.value = "fixed";
    }
  },
});
