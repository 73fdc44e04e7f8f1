"""The one place the pack names ComfyUI's node API version.

Pinned to ``comfy_api.v0_0_2``, the stable version ComfyUI's developers recommend over ``latest``
(which may change under a pack between ComfyUI releases). Everything the nodes use (``io`` schemas
and sockets, ``ui`` previews, ``InputImpl.VideoFromFile``, ``ComfyExtension``) is offered there; no
``latest``-only feature is needed.
"""

from comfy_api.v0_0_2 import ComfyExtension, InputImpl, io, ui  # noqa: F401
