"""Configuration and class vocabulary of PushWorld.

Kept light (numpy only) so that other modules (dataset stores, evaluation code) can import
the class list and the config without pulling in the renderer.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

import numpy as np

# Semantic ids are indices into this tuple; 0 and 1 are fixed (background, arm), the
# rest are the pushable shape categories.
CLASS_NAMES = ("background", "arm", "disc", "box", "triangle", "polygon", "lshape")
SHAPE_CLASSES = CLASS_NAMES[2:]

# Instance ids: 0 = table, 1 = arm, 2 + k = object k. uint8 storage caps k.
MAX_OBJECTS_LIMIT = 16
MIN_SIDE = 16


@dataclass(frozen=True)
class PushWorldConfig:
    """All knobs of the generator. Sizes are relative to min(height, width) internally,
    so the same config looks alike at any resolution."""

    height: int = 64
    width: int = 64
    n_frames: int = 30
    min_objects: int = 1
    max_objects: int = 5
    # Amplitude of the procedural table/object textures (1.0 ~ +-70 grey levels).
    texture_strength: float = 0.5
    # Probability that an object's base colour is drawn close to the table's mean colour.
    colour_overlap: float = 0.3
    shadows: bool = True
    # Relative amplitude of the slow global gain drift (brightness + colour + light gradient).
    illumination_change: float = 0.15
    # Gaussian sensor noise, in 0..255 units.
    noise_std: float = 3.0
    # Camera shake amplitude in pixels; offsets are rounded to whole pixels so the table's
    # flow stays exact.
    camera_shake: float = 0.0
    # --- extra knobs -------------------------------------------------------------------
    # Darkness of shadows (0 = none, 1 = black core).
    shadow_strength: float = 0.45
    # Up to this many static object-like blobs painted onto the table (hard negatives for
    # appearance-only segmentation: they look like objects but never move).
    distractors: int = 3
    # Multiplier on object sizes.
    object_scale: float = 1.0
    # Multiplier on the arm's maximum speed.
    arm_speed: float = 1.0
    # Probability that the arm's next waypoint is chosen to push through an object.
    push_bias: float = 0.7
    # Physics sub-steps per frame (more = smaller penetrations, slower).
    physics_substeps: int = 2

    def __post_init__(self) -> None:
        _validate(self)


def _fail(name: str, value, why: str):
    raise ValueError(f"PushWorldConfig.{name}={value!r} is invalid: {why}")


def _validate(cfg: PushWorldConfig) -> None:
    # Type checks first so that the range checks below compare numbers.
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.type == "int" and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
            _fail(f.name, v, "must be an integer")
        if f.type == "float" and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            _fail(f.name, v, "must be a real number")
        if f.type == "bool" and not isinstance(v, (bool, np.bool_)):
            _fail(f.name, v, "must be a bool")
    if cfg.height < MIN_SIDE:
        _fail("height", cfg.height, f"must be >= {MIN_SIDE}")
    if cfg.width < MIN_SIDE:
        _fail("width", cfg.width, f"must be >= {MIN_SIDE}")
    if cfg.n_frames < 1:
        _fail("n_frames", cfg.n_frames, "must be >= 1")
    if cfg.min_objects < 0:
        _fail("min_objects", cfg.min_objects, "must be >= 0")
    if cfg.max_objects < cfg.min_objects:
        _fail("max_objects", cfg.max_objects, f"must be >= min_objects ({cfg.min_objects})")
    if cfg.max_objects > MAX_OBJECTS_LIMIT:
        _fail("max_objects", cfg.max_objects, f"must be <= {MAX_OBJECTS_LIMIT}")
    for name in ("texture_strength", "illumination_change", "noise_std", "camera_shake",
                 "shadow_strength"):
        if not getattr(cfg, name) >= 0:  # also rejects NaN
            _fail(name, getattr(cfg, name), "must be >= 0")
    if not 0.0 <= cfg.colour_overlap <= 1.0:
        _fail("colour_overlap", cfg.colour_overlap, "must be in [0, 1]")
    if not 0.0 <= cfg.push_bias <= 1.0:
        _fail("push_bias", cfg.push_bias, "must be in [0, 1]")
    if not cfg.shadow_strength <= 1.0:
        _fail("shadow_strength", cfg.shadow_strength, "must be <= 1")
    if cfg.distractors < 0:
        _fail("distractors", cfg.distractors, "must be >= 0")
    if not 0.2 <= cfg.object_scale <= 3.0:
        _fail("object_scale", cfg.object_scale, "must be in [0.2, 3]")
    if not 0.0 < cfg.arm_speed <= 5.0:
        _fail("arm_speed", cfg.arm_speed, "must be in (0, 5]")
    if cfg.physics_substeps < 1:
        _fail("physics_substeps", cfg.physics_substeps, "must be >= 1")
