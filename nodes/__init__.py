"""EverAnimate's ComfyUI nodes (V3 API): the only package of this project that imports ComfyUI.

The node classes are imported by ``nodes.extension`` when ComfyUI calls ``comfy_entrypoint``; the
helper modules (sockets, images, wan_patch) import ComfyUI only inside functions that need it.
"""
