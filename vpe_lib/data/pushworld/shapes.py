"""Rigid 2-D shapes as unions of primitives, with signed distance functions.

Every moving thing in PushWorld (objects and arm parts) is a ``Shape`` in its own local
frame. Rendering evaluates the SDF on pixel grids (inside test, anti-aliasing), physics
uses exact closest points (gripper contact) and boundary samples (object-object contact).
Two primitives cover everything: convex polygons and capsules (a disc is a capsule with
zero length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Poly:
    """Convex polygon given by its vertices in order (either winding: normals are flipped
    to point outwards)."""

    verts: np.ndarray  # (n, 2)
    normals: np.ndarray = field(init=False)  # (n, 2) outward unit normals of edges i -> i+1
    offsets: np.ndarray = field(init=False)  # (n,) so that n_i . p - o_i is the plane distance

    def __post_init__(self) -> None:
        # Plain Python: polygons have a handful of vertices, and numpy's per-call
        # overhead would dominate (shapes are built for every video).
        v = [(float(x), float(y)) for x, y in (self.verts.tolist() if isinstance(self.verts, np.ndarray) else self.verts)]
        n = len(v)
        mx, my = sum(p[0] for p in v) / n, sum(p[1] for p in v) / n
        planes = []
        for i in range(n):
            (ax, ay), (bx, by) = v[i], v[(i + 1) % n]
            nx, ny = by - ay, ax - bx
            norm = math.hypot(nx, ny)
            nx, ny = nx / norm, ny / norm
            if (ax - mx) * nx + (ay - my) * ny < 0:  # winding-independent: point outwards
                nx, ny = -nx, -ny
            planes.append((nx, ny, nx * ax + ny * ay))
        self._planes = planes
        self._vlist = v
        self.verts = np.array(v)
        self.normals = np.array([p[:2] for p in planes])
        self.offsets = np.array([p[2] for p in planes])
        # Axis-aligned rectangles (boxes in their own frame, palm, fingers, L-shape bars)
        # get a 2-plane SDF: max(|u - cu| - hu, |v - cv| - hv), ~3x fewer ops.
        self._rect = None
        if n == 4 and all(min(abs(p[0]), abs(p[1])) < 1e-12 for p in planes):
            xs, ys = [p[0] for p in v], [p[1] for p in v]
            self._rect = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2,
                          (max(xs) - min(xs)) / 2, (max(ys) - min(ys)) / 2)


@dataclass
class Capsule:
    """Segment a-b thickened by radius r (a == b gives a disc)."""

    a: tuple[float, float]
    b: tuple[float, float]
    r: float


@dataclass
class Shape:
    prims: list
    cls: int = 0
    # Filled by finalize(): bounding radius about the origin, local bbox, boundary samples.
    radius: float = 0.0
    lo: np.ndarray = None
    hi: np.ndarray = None
    boundary: np.ndarray = None

    def finalize(self, spacing: float | None = 1.0) -> "Shape":
        """Compute bounds; boundary samples (for object-object contact) only when
        ``spacing`` is given."""
        if spacing is not None:
            self.boundary = boundary_points(self, spacing)
        pts, rad = [], []
        for p in self.prims:
            if isinstance(p, Poly):
                pts += p._vlist
                rad += [math.hypot(x, y) for x, y in p._vlist]
            else:
                for x, y in (p.a, p.b):
                    pts += [(x - p.r, y - p.r), (x + p.r, y + p.r)]
                    rad.append(math.hypot(x, y) + p.r)
        self.lo = np.array([min(q[0] for q in pts), min(q[1] for q in pts)])
        self.hi = np.array([max(q[0] for q in pts), max(q[1] for q in pts)])
        self.radius = float(max(rad))
        return self


# --------------------------------------------------------------------------- SDF on grids
def sdf(shape: Shape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) at local coordinates (u, v), any array shape.

    Polygons use the max of plane distances: exact inside and near edges, slightly
    under-estimating outside corners, which only softens anti-aliasing there."""
    out = None
    for p in shape.prims:
        d = _prim_sdf(p, u, v)
        out = d if out is None else np.minimum(out, d, out=out)
    return out


def _prim_sdf(p, u, v):
    if isinstance(p, Poly):
        if p._rect is not None:
            cu, cv, hu, hv = p._rect
            du = np.abs(u - cu) if cu else np.abs(u)
            dv = np.abs(v - cv) if cv else np.abs(v)
            return np.maximum(du - hu, dv - hv)
        d = None
        for nx, ny, o in p._planes:
            di = u * nx + v * ny - o
            d = di if d is None else np.maximum(d, di, out=d)
        return d
    (ax, ay), (bx, by), r = p.a, p.b, p.r
    if ay == 0 and by == 0:
        # Fast path for segments on the local x axis (all arm links and discs at the
        # origin): distance to the segment is hypot(u - clamp(u, ax, bx), v).
        if ax == bx:
            du = u - ax if ax else u
        else:
            du = u - np.minimum(np.maximum(u, min(ax, bx)), max(ax, bx))
        return np.sqrt(du * du + v * v) - r
    pu, pv = u - ax, v - ay
    ex, ey = bx - ax, by - ay
    ee = ex * ex + ey * ey
    if ee > 0:
        h = np.minimum(np.maximum((pu * ex + pv * ey) * (1.0 / ee), 0.0), 1.0)
        pu = pu - h * ex
        pv = pv - h * ey
    return np.sqrt(pu * pu + pv * pv) - r


# ------------------------------------------------------------------ physics-side queries
def sdf_normals(shape: Shape, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SDF and outward unit normal at local points (m, 2); used for object-object contact
    where only penetrating (inside) points matter, for which both are exact."""
    best_d = None
    best_n = None
    for p in shape.prims:
        if isinstance(p, Poly):
            planes = pts @ p.normals.T - p.offsets  # (m, n)
            k = planes.argmax(axis=1)
            d = planes[np.arange(len(pts)), k]
            n = p.normals[k]
        else:
            a, b = np.asarray(p.a), np.asarray(p.b)
            e = b - a
            ee = float(e @ e)
            h = np.clip((pts - a) @ e / ee, 0, 1)[:, None] if ee > 0 else np.zeros((len(pts), 1))
            diff = pts - (a + h * e)
            dist = np.linalg.norm(diff, axis=1)
            d = dist - p.r
            n = diff / np.maximum(dist, 1e-9)[:, None]
        if best_d is None:
            best_d, best_n = d, n
        else:
            take = d < best_d
            best_d = np.where(take, d, best_d)
            best_n = np.where(take[:, None], n, best_n)
    return best_d, best_n


def closest_point(shape: Shape, x: float, y: float) -> tuple[float, float, float]:
    """Exact signed distance from local point (x, y) to the shape and the closest boundary
    point (qx, qy). Used for gripper contact, where outside-corner accuracy matters."""
    best = (math.inf, x, y)
    for p in shape.prims:
        if isinstance(p, Poly):
            cand = _poly_closest(p, x, y)
        else:
            cand = _capsule_closest(p, x, y)
        if cand[0] < best[0]:
            best = cand
    return best


def _poly_closest(p: Poly, x: float, y: float):
    planes = [nx * x + ny * y - o for nx, ny, o in p._planes]
    dmax = max(planes)
    if dmax <= 0:  # inside: nearest boundary point is the projection on the nearest edge
        nx, ny, _ = p._planes[planes.index(dmax)]
        return dmax, x - nx * dmax, y - ny * dmax
    best = (math.inf, x, y)
    v = p._vlist
    n = len(v)
    for i in range(n):
        ax, ay = v[i]
        bx, by = v[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        t = ((x - ax) * ex + (y - ay) * ey) / (ex * ex + ey * ey)
        t = 0.0 if t < 0 else (1.0 if t > 1 else t)
        qx, qy = ax + t * ex, ay + t * ey
        d = math.hypot(x - qx, y - qy)
        if d < best[0]:
            best = (d, qx, qy)
    return best


def _capsule_closest(p: Capsule, x: float, y: float):
    (ax, ay), (bx, by) = p.a, p.b
    ex, ey = bx - ax, by - ay
    ee = ex * ex + ey * ey
    t = 0.0 if ee == 0 else min(1.0, max(0.0, ((x - ax) * ex + (y - ay) * ey) / ee))
    cx, cy = ax + t * ex, ay + t * ey
    dx, dy = x - cx, y - cy
    d = math.hypot(dx, dy)
    if d < 1e-9:  # on the axis: any direction is a valid normal
        return -p.r, cx + p.r, cy
    return d - p.r, cx + dx / d * p.r, cy + dy / d * p.r


def boundary_points(shape: Shape, spacing: float) -> np.ndarray:
    """Points sampled along the outline of every primitive (interior seams of unions are
    included; harmless because they are inside the other primitive)."""
    out = []
    for p in shape.prims:
        if isinstance(p, Poly):
            v = p._vlist
            for i in range(len(v)):
                (ax, ay), (bx, by) = v[i], v[(i + 1) % len(v)]
                k = max(2, int(math.ceil(math.hypot(bx - ax, by - ay) / spacing)))
                out += [(ax + (bx - ax) * j / k, ay + (by - ay) * j / k) for j in range(k)]
        else:
            (ax, ay), (bx, by), r = p.a, p.b, p.r
            length = math.hypot(bx - ax, by - ay)
            k = max(12, int(math.ceil(2 * math.pi * r / spacing)))
            ring = [(r * math.cos(2 * math.pi * j / k), r * math.sin(2 * math.pi * j / k)) for j in range(k)]
            if length == 0:
                out += [(ax + x, ay + y) for x, y in ring]
                continue
            dx, dy = (bx - ax) / length, (by - ay) / length
            # Half-rings at each end plus the two straight sides.
            out += [(ax + x, ay + y) for x, y in ring if x * dx + y * dy <= 0]
            out += [(bx + x, by + y) for x, y in ring if x * dx + y * dy >= 0]
            m = max(2, int(math.ceil(length / spacing)))
            for j in range(m):
                t = (j + 0.5) / m
                px, py = ax + t * (bx - ax), ay + t * (by - ay)
                out += [(px - r * dy, py + r * dx), (px + r * dy, py - r * dx)]
    return np.array(out)


# ------------------------------------------------------------------- object generation
def _recentre(prims: list, areas: list, centroids: list) -> list:
    """Shift primitives so the area centroid is the local origin: objects then rotate
    about their centre of mass, which is what pushing looks like."""
    c = sum(a * np.asarray(cc) for a, cc in zip(areas, centroids)) / sum(areas)
    out = []
    for p in prims:
        if isinstance(p, Poly):
            out.append(Poly(p.verts - c))
        else:
            out.append(Capsule(tuple(np.asarray(p.a) - c), tuple(np.asarray(p.b) - c), p.r))
    return out


def _poly_area_centroid(v: np.ndarray) -> tuple[float, np.ndarray]:
    """Shoelace area and centroid of a simple polygon."""
    pts = v.tolist()
    a = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        cross = x0 * y1 - x1 * y0
        a += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    a /= 2
    return abs(a), np.array([cx / (6 * a), cy / (6 * a)])


def _circle_polygon(rng: np.random.Generator, n: int, radius: float, jitter: float) -> np.ndarray:
    """Points on a circle at jittered sorted angles are always convex; a random anisotropic
    stretch keeps convexity and varies the look."""
    base = 2 * math.pi * np.arange(n) / n
    ang = base + rng.uniform(-jitter, jitter, n) * (math.pi / n)
    v = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    v[:, 0] *= rng.uniform(0.75, 1.0)
    return v


def make_object_shape(rng: np.random.Generator, cls_name: str, size: float, cls_id: int,
                      boundary: bool = True) -> Shape:
    """Sample an object of category ``cls_name`` whose bounding radius is about ``size``
    (boundary samples for contact physics only if ``boundary``)."""
    if cls_name == "disc":
        prims = [Capsule((0.0, 0.0), (0.0, 0.0), 0.8 * size)]
    elif cls_name == "box":
        beta = rng.uniform(0.45, 0.8)  # aspect: half extents R cos(beta), R sin(beta)
        a, b = size * math.cos(beta), size * math.sin(beta)
        prims = [Poly(np.array([[-a, -b], [a, -b], [a, b], [-a, b]]))]
    elif cls_name == "triangle":
        v = _circle_polygon(rng, 3, size, 0.5)
        area, c = _poly_area_centroid(v)
        prims = _recentre([Poly(v)], [area], [c])
    elif cls_name == "polygon":
        v = _circle_polygon(rng, int(rng.integers(5, 9)), size, 0.6)
        area, c = _poly_area_centroid(v)
        prims = _recentre([Poly(v)], [area], [c])
    elif cls_name == "lshape":
        # Two bars sharing a corner; lengths chosen so the circumradius is ~size.
        lx, ly = size * rng.uniform(1.0, 1.35), size * rng.uniform(0.85, 1.25)
        w = size * rng.uniform(0.45, 0.6)
        b1 = np.array([[0, 0], [lx, 0], [lx, w], [0, w]], dtype=np.float64)
        b2 = np.array([[0, w], [w, w], [w, ly], [0, ly]], dtype=np.float64)
        a1, c1 = _poly_area_centroid(b1)
        a2, c2 = _poly_area_centroid(b2)
        prims = _recentre([Poly(b1), Poly(b2)], [a1, a2], [c1, c2])
    else:
        raise ValueError(f"unknown shape class {cls_name!r}")
    return Shape(prims, cls=cls_id).finalize(spacing=max(0.75, size / 8) if boundary else None)
