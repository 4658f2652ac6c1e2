"""PushWorld: a BAIR-like synthetic robot-pushing video world with exact ground truth.

A two-link arm with a gripper pushes 1-5 rigid shapes around a textured table.
``generate_video(seed, cfg)`` returns frames plus per-pixel instance / semantic labels,
exact optical flow, BAIR-like actions and the arm's and objects' states.

Layout: config (knobs, classes), shapes (SDF geometry), scene (sampling), physics
(arm trajectory + kinematic pushing), textures + render (appearance, rasterising,
shadows, noise), generate (orchestration).
"""

from .config import CLASS_NAMES, SHAPE_CLASSES, PushWorldConfig
from .generate import generate_video

__all__ = ["CLASS_NAMES", "SHAPE_CLASSES", "PushWorldConfig", "generate_video"]
