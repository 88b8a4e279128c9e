"""`scenes`: the built-in dataset of procedurally rendered multi-object scenes (CLEVR-like).

Each image shows 3 to 10 objects (spheres, cubes, cylinders) in one of eight colours and one of two
materials (matte rubber or metal) on a ground plane, seen from a fixed camera. It is ray-cast
analytically with numpy, vectorised over a batch of images, every object and every pixel:

* primary rays give depth ordering, hence correct occlusion;
* shading = hemisphere ambient + a key light with cast shadows (several jittered shadow rays, so
  the penumbra is soft) + a fill and a rim light; metals add a tinted sky reflection and a tight
  specular highlight, rubber a broad dim sheen;
* the ground receives soft contact occlusion from every object and fades into a backdrop;
* 2x2 supersampling anti-aliases the edges.

Image `i` of seed `s` depends only on `(s, i)`, so output is deterministic whatever the batching
or the number of worker processes. Images are uint8, layout CHW, any power-of-two resolution.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# CLEVR's palette (sRGB 0-255).
COLORS = {
    "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
}
SHAPES = ("sphere", "cube", "cylinder")
MATERIALS = ("rubber", "metal")
SIZES = (0.35, 0.7)                  # CLEVR's small and large object scales
MAX_OBJECTS = 10
RENDERER_VERSION = 1          # bump when the images change
SCENES_DEFAULT_IMAGES = 10000   # size of the dataset when no --max-images is given
_ALBEDO = (np.array(list(COLORS.values()), np.float32) / 255.0) ** 2.2   # linear RGB

_EYE = np.array([7.2, -6.6, 6.0], np.float32)          # fixed camera, CLEVR-like viewpoint
_TARGET = np.array([0.0, 0.0, 0.3], np.float32)
_FOV_DEG = 36.0
_KEY = np.array([-0.45, -0.6, 0.66], np.float32)      # key light comes from the camera's left
_FILL = np.array([0.7, -0.35, 0.6], np.float32)
_RIM = np.array([0.1, 0.9, 0.45], np.float32)
_GROUND = np.array([0.43, 0.43, 0.42], np.float32)    # linear
_BACKDROP = np.array([0.36, 0.36, 0.37], np.float32)
_EPS = 1e-4


@dataclass(frozen=True)
class SceneOptions:
    """Knobs of the renderer; the defaults define the `scenes` dataset."""
    min_objects: int = 3        # objects per scene, inclusive range
    max_objects: int = 10
    supersample: int = 2        # rays per pixel along each axis
    shadow_rays: int = 4        # jittered rays toward the key light (soft shadows)
    area: float = 3.6           # objects lie in [-area, area]^2 on the ground ...
    frame: float = 0.85         # ... and their centres project within this part of the frame


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _camera_basis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward, right, up) unit vectors of the fixed camera."""
    f = _unit(_TARGET - _EYE)
    right = _unit(np.cross(f, [0.0, 0.0, 1.0]))
    return f, right, np.cross(right, f)


_BASIS = _camera_basis()


def _project(p: np.ndarray) -> np.ndarray:
    """Frame coordinates of world points [..., 3]: [..., 2], (-1, -1) = top-left, (1, 1) = bottom-right."""
    f, right, up = _BASIS
    v = p - _EYE
    z = v @ f
    k = math.tan(math.radians(_FOV_DEG) / 2.0)
    return np.stack([(v @ right) / z, -(v @ up) / z], -1) / k


def sample_scene(seed: int, index: int, opts: SceneOptions = SceneOptions()) -> dict[str, np.ndarray]:
    """The objects of image `index`: arrays of length MAX_OBJECTS, unused slots have shape -1."""
    rng = np.random.default_rng([seed, index])
    n = int(rng.integers(opts.min_objects, opts.max_objects + 1))
    scene = {
        "shape": np.full(MAX_OBJECTS, -1, np.int64), "x": np.zeros(MAX_OBJECTS, np.float32),
        "y": np.zeros(MAX_OBJECTS, np.float32), "size": np.ones(MAX_OBJECTS, np.float32),
        "angle": np.zeros(MAX_OBJECTS, np.float32), "color": np.zeros(MAX_OBJECTS, np.int64),
        "metal": np.zeros(MAX_OBJECTS, bool),
    }
    placed = 0
    for _ in range(n):
        shape, color = int(rng.integers(3)), int(rng.integers(len(COLORS)))
        size, metal = SIZES[int(rng.integers(2))], bool(rng.random() < 0.5)
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        for _try in range(40):
            x, y = rng.uniform(-opts.area, opts.area, size=2)
            if np.abs(_project(np.array([x, y, size]))).max() > opts.frame:
                continue
            # Footprints (radius `size` for every shape) must not touch: no interpenetration.
            d = np.hypot(scene["x"][:placed] - x, scene["y"][:placed] - y)
            if np.all(d > scene["size"][:placed] + size + 0.12):
                break
        else:
            continue
        for key, value in (("shape", shape), ("x", x), ("y", y), ("size", size), ("angle", angle),
                           ("color", color), ("metal", metal)):
            scene[key][placed] = value
        placed += 1
    return scene


class _Objects:
    """Per-object geometry of a batch: each field is [B, N] (N = MAX_OBJECTS)."""

    def __init__(self, scenes: list[dict[str, np.ndarray]]):
        def get(key):
            return np.stack([s[key] for s in scenes])
        self.shape, self.metal = get("shape"), get("metal")
        size = get("size")
        self.albedo = _ALBEDO[get("color")]                                  # [B, N, 3]
        self.radius = np.where(self.shape == 1, size / math.sqrt(2.0), size).astype(np.float32)
        self.half_h = self.radius.copy()      # sphere/cube: half extent; cylinder: height 2r
        self.cx, self.cy, self.cz = get("x"), get("y"), self.half_h
        self.cos, self.sin = np.cos(get("angle")), np.sin(get("angle"))
        self.foot = size                                                     # footprint radius
        # Radius of a sphere around the centre that contains the object (for culling).
        self.bound = np.where(self.shape == 0, self.radius, math.sqrt(3.0) * self.radius) * 1.01

    def centres(self) -> np.ndarray:
        return np.stack([self.cx, self.cy, self.cz], -1)                     # [B, N, 3]


def _hit_sphere(o, d, r, _h):
    b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
    disc = b * b - (o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc > 0) & (t > _EPS), t, np.inf)


def _hit_box(o, d, r, _h):
    near, far = None, None
    for oi, di in zip(o, d):
        inv = 1.0 / np.where(np.abs(di) < 1e-9, 1e-9, di)
        t1, t2 = (-r - oi) * inv, (r - oi) * inv
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        near = lo if near is None else np.maximum(near, lo)
        far = hi if far is None else np.minimum(far, hi)
    return np.where((far >= near) & (near > _EPS), near, np.inf)


def _hit_cylinder(o, d, r, h):
    a = np.maximum(d[0] * d[0] + d[1] * d[1], 1e-12)
    b = o[0] * d[0] + o[1] * d[1]
    disc = b * b - a * (o[0] * o[0] + o[1] * o[1] - r * r)
    ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    side = (disc > 0) & (ts > _EPS) & (np.abs(o[2] + ts * d[2]) <= h)
    dz = np.where(np.abs(d[2]) < 1e-9, 1e-9, d[2])
    tc = (-np.sign(dz) * h - o[2]) / dz          # the cap the ray enters through
    cx, cy = o[0] + tc * d[0], o[1] + tc * d[1]
    cap = (tc > _EPS) & (cx * cx + cy * cy <= r * r)
    return np.minimum(np.where(side, ts, np.inf), np.where(cap, tc, np.inf))


_HITS = (_hit_sphere, _hit_box, _hit_cylinder)


class _Camera:
    """Camera rays at one (supersampled) resolution, grouped into square tiles for culling."""

    def __init__(self, res: int, tile: int = 8):
        f, right, up = _BASIS
        u = (np.arange(res, dtype=np.float32) + 0.5) / res * 2.0 - 1.0
        v, u = np.meshgrid(u, u, indexing="ij")
        k = math.tan(math.radians(_FOV_DEG) / 2.0)
        d = _unit(f[None] + (u.reshape(-1, 1) * k) * right[None] - (v.reshape(-1, 1) * k) * up[None])
        self.res, self.dirs = res, [d[:, i].astype(np.float32) for i in range(3)]   # [P] each
        self.tile = tile = min(tile, res)
        g = np.arange(res * res).reshape(res // tile, tile, res // tile, tile)
        self.tile_pix = g.transpose(0, 2, 1, 3).reshape(-1, tile * tile)            # [J, T*T]
        td = d[self.tile_pix]                                                        # [J, T*T, 3]
        self.tile_dir = _unit(td.mean(axis=1))                                       # [J, 3]
        cos = np.clip(np.einsum("jtc,jc->jt", td, self.tile_dir), -1.0, 1.0)
        self.tile_angle = np.arccos(cos.min(axis=1)) + 1e-3                          # [J]


_CAMERAS: dict[int, _Camera] = {}


def _camera(res: int) -> _Camera:
    if res not in _CAMERAS:
        _CAMERAS[res] = _Camera(res)
    return _CAMERAS[res]


def _trace_pairs(obj: _Objects, b, n, pix, o: list, dirs: list) -> np.ndarray:
    """Hit distances of the rays `pix` ([K, T*T] pixel indices of image b[k]) with object n[k].

    `o`: three components, scalar or [B, P] (per image). `dirs`: a list of directions, each three
    components, scalar or [P] (shared by the batch). Returns [len(dirs), K, T*T] (inf = miss).
    """
    flat = None
    t = np.full((len(dirs),) + pix.shape, np.inf, np.float32)
    kind = obj.shape[b, n]
    for shape, hit in enumerate(_HITS):
        k = np.nonzero(kind == shape)[0]
        if k.size == 0:
            continue
        bk, nk = b[k], n[k]
        c, s = obj.cos[bk, nk][:, None], obj.sin[bk, nk][:, None]
        pk = pix[k]
        if np.ndim(o[0]) == 2:
            flat = bk[:, None] * o[0].shape[1] + pk
        px, py, pz = (np.asarray(x).ravel()[flat] if np.ndim(x) == 2 else x for x in o)
        px, py, pz = px - obj.cx[bk, nk][:, None], py - obj.cy[bk, nk][:, None], pz - obj.cz[bk, nk][:, None]
        lo = [c * px + s * py, -s * px + c * py, pz]
        for i, d in enumerate(dirs):
            dx, dy, dz = (x[pk] if np.ndim(x) == 1 else x for x in d)
            ld = [c * dx + s * dy, -s * dx + c * dy, dz + 0.0 * c]
            t[i, k] = hit(lo, ld, obj.radius[bk, nk][:, None], obj.half_h[bk, nk][:, None])
    return t


def _first_hit(obj: _Objects, cam: _Camera) -> tuple[np.ndarray, np.ndarray]:
    """Nearest object along each camera ray: (t [B, P], slot [B, P]); t = inf where none."""
    B, P = obj.shape.shape[0], cam.res * cam.res
    v = obj.centres() - _EYE                                                     # [B, N, 3]
    dist = np.linalg.norm(v, axis=-1)
    ang = np.arcsin(np.minimum(obj.bound / dist, 1.0))                           # [B, N]
    cos = np.einsum("bnc,jc->bnj", v / dist[..., None], cam.tile_dir)
    near = np.arccos(np.clip(cos, -1.0, 1.0)) <= cam.tile_angle + ang[..., None]
    b, n, j = np.nonzero(near & (obj.shape >= 0)[..., None])
    pix = cam.tile_pix[j]
    t = _trace_pairs(obj, b, n, pix, [np.float32(x) for x in _EYE], [cam.dirs])[0]
    flat = (b[:, None] * P + pix)[np.isfinite(t)]
    slot = np.broadcast_to(n[:, None], t.shape)[np.isfinite(t)]
    t = t[np.isfinite(t)]
    depth = np.full(B * P, np.inf, np.float32)
    np.minimum.at(depth, flat, t)
    win = np.zeros(B * P, np.int64)
    first = t == depth[flat]
    win[flat[first]] = slot[first]
    return depth.reshape(B, P), win.reshape(B, P)


def _normals(obj: _Objects, b: np.ndarray, slot: np.ndarray, p: list) -> np.ndarray:
    """World-space normals at hit points `p` ([M] each) on objects (b, slot): [M, 3]."""
    c, s, r, h, kind = (a[b, slot] for a in (obj.cos, obj.sin, obj.radius, obj.half_h, obj.shape))
    px, py, pz = p[0] - obj.cx[b, slot], p[1] - obj.cy[b, slot], p[2] - obj.cz[b, slot]
    lx, ly = c * px + s * py, -s * px + c * py
    qx, qy, qz = np.abs(lx) / r, np.abs(ly) / r, np.abs(pz) / h
    # cube: the face of the dominant axis; cylinder: cap or side; sphere: radial.
    bx = (qx >= qy) & (qx >= qz)
    by = ~bx & (qy >= qz)
    bz = ~bx & ~by
    cap = qz >= np.hypot(lx, ly) / r
    nx = np.where(kind == 0, lx / r, np.where(kind == 1, bx * np.sign(lx), ~cap * lx / r))
    ny = np.where(kind == 0, ly / r, np.where(kind == 1, by * np.sign(ly), ~cap * ly / r))
    nz = np.where(kind == 0, pz / r, np.where(kind == 1, bz * np.sign(pz), cap * np.sign(pz)))
    wx, wy = c * nx - s * ny, s * nx + c * ny
    return _unit(np.stack([wx, wy, nz], -1) + np.float32(1e-9))


def _key_lights(count: int) -> np.ndarray:
    """Directions sampling a small disc around the key light: [count, 3]."""
    key = _unit(_KEY)
    if count <= 1:
        return key[None]
    a = _unit(np.cross(key, [0.0, 0.0, 1.0]))
    b = np.cross(key, a)
    ang = 2.0 * math.pi * (np.arange(count) + 0.5) / count
    spread = 0.07
    dirs = key[None] + spread * (np.cos(ang)[:, None] * a[None] + np.sin(ang)[:, None] * b[None])
    return _unit(dirs).astype(np.float32)


def _shadow(obj: _Objects, cam: _Camera, p: list, n: list, lights: np.ndarray) -> np.ndarray:
    """Fraction of the key light's disc (directions `lights`) visible from points `p`: [B, P].

    Culling: shadow rays are nearly parallel, so a tile of points can only be shadowed by objects
    whose bounding sphere, seen along the key light, overlaps the tile's extent (plus a margin for
    the jitter of the light directions).
    """
    B, P = p[0].shape
    o = [p[i] + 2e-3 * n[i] for i in range(3)]
    key = _unit(_KEY)
    a = _unit(np.cross(key, [0.0, 0.0, 1.0]))
    basis = (a, np.cross(key, a), key)
    c = obj.centres()
    margin = (obj.bound + 0.2)[..., None]                                         # [B, N, 1]
    near = (obj.shape >= 0)[..., None]
    nt = cam.res // cam.tile
    for k, v in enumerate(basis):
        x = sum(o[i] * np.float32(v[i]) for i in range(3)).reshape(B, nt, cam.tile, nt, cam.tile)
        cx = (c @ v)[..., None]                                                   # [B, N, 1]
        near = near & (cx + margin > x.min(axis=(2, 4)).reshape(B, 1, -1))
        if k < 2:
            near = near & (cx - margin < x.max(axis=(2, 4)).reshape(B, 1, -1))
    b, nn, j = np.nonzero(near)
    pix = cam.tile_pix[j]
    flat = b[:, None] * P + pix
    lit = np.zeros(B * P, np.float32)
    for t in _trace_pairs(obj, b, nn, pix, o, [[np.float32(x) for x in L] for L in lights]):
        hit = np.ones(B * P, bool)
        hit[flat[np.isfinite(t)]] = False
        lit += hit
    return (lit / len(lights)).reshape(B, P)


def _contact_occlusion(obj: _Objects, p: list, step: int) -> np.ndarray:
    """Ambient occlusion of ground points by each object, as if it were a sphere: [B, P].

    Occlusion varies slowly, so it is evaluated once per `step` x `step` block of rays.
    """
    B, P = p[0].shape
    res = math.isqrt(P)
    sub = [x.reshape(B, res // step, step, res // step, step)[:, :, 0, :, 0].reshape(B, 1, -1) for x in p]
    dx, dy = sub[0] - obj.cx[:, :, None], sub[1] - obj.cy[:, :, None]
    r, cz = obj.foot[:, :, None], obj.cz[:, :, None]
    d2 = dx * dx + dy * dy + cz * cz
    occ = np.minimum(r * r / d2, 1.0) * cz / np.sqrt(d2)
    occ = np.where(obj.shape[:, :, None] >= 0, occ, 0.0)
    ao = np.prod(1.0 - 0.8 * occ, axis=1).reshape(B, res // step, 1, res // step, 1)
    return np.broadcast_to(ao, (B, res // step, step, res // step, step)).reshape(B, P)


def _shade_objects(obj: _Objects, b, slot, n: np.ndarray, view: np.ndarray, shadow: np.ndarray):
    """Linear RGB of object hits: objects (b, slot), normals n, view directions and shadow [M, 3|1]."""
    albedo = obj.albedo[b, slot]                                                 # [M, 3]
    metal = obj.metal[b, slot][:, None]
    key, fill, rim = (np.maximum(n @ _unit(L), 0.0)[:, None] for L in (_KEY, _FILL, _RIM))
    hemi = 0.22 + 0.13 * n[:, 2:3]
    diffuse = hemi + 0.95 * key * shadow + 0.28 * fill + 0.18 * rim
    # Blinn-Phong highlight of the key light; the reflected view ray picks up a sky gradient.
    half = _unit(_unit(_KEY)[None] - view)
    ndh = np.maximum(np.sum(n * half, -1, keepdims=True), 0.0)
    cos_v = np.sum(view * n, -1, keepdims=True)
    refl = view - 2.0 * cos_v * n
    # Environment seen in the reflection: dim ground below a crisp horizon, a bright sky above,
    # brightest toward the key light (a studio softbox), so flat metal faces vary with their angle.
    rz = refl[:, 2:3]
    sky = np.where(rz < 0.0, 0.06 + 0.08 * np.exp(4.0 * rz), 0.35 + 0.45 * np.sqrt(np.clip(rz, 0.0, 1.0)))
    sky = sky * (0.6 + 1.4 * np.maximum(refl @ _unit(_KEY), 0.0)[:, None] ** 3)
    fresnel = 0.04 + 0.96 * (1.0 - np.maximum(-cos_v, 0.0)) ** 5
    glint = shadow * (1.6 * ndh ** 90 + albedo * 0.5 * ndh ** 12)
    metal_rgb = albedo * (0.12 * diffuse + 1.0 * sky) + glint + 0.25 * fresnel * sky
    rubber_rgb = albedo * diffuse + 0.08 * shadow * ndh ** 8
    return np.where(metal, metal_rgb, rubber_rgb)


def _render_rays(obj: _Objects, cam: _Camera, lights: np.ndarray, ao_step: int) -> np.ndarray:
    """Linear RGB of every camera ray: [B, P, 3]."""
    dirs = cam.dirs
    t_obj, win = _first_hit(obj, cam)                                            # [B, P]
    t_ground = np.where(dirs[2] < -1e-6, -_EYE[2] / np.minimum(dirs[2], -1e-6), np.inf)
    on_obj = t_obj < t_ground
    t_hit = np.where(on_obj, t_obj, np.minimum(t_ground, 1e3))
    p = [_EYE[i] + t_hit * dirs[i] for i in range(3)]
    b, i = np.nonzero(on_obj)
    slot = win[b, i]
    nv = _normals(obj, b, slot, [x[b, i] for x in p])                            # [M, 3]
    n = [np.zeros_like(t_hit), np.zeros_like(t_hit), np.ones_like(t_hit)]
    for k in range(3):
        n[k][b, i] = nv[:, k]
    shadow = _shadow(obj, cam, p, n, lights)
    # Ground: key light with soft shadow, hemisphere ambient, contact occlusion, fade into backdrop.
    ao = _contact_occlusion(obj, p, ao_step)
    rgb = _GROUND * (0.3 * ao + 0.95 * _unit(_KEY)[2] * shadow * (0.6 + 0.4 * ao) + 0.1)[..., None]
    fade = np.clip((np.hypot(p[0], p[1]) - 7.0) / 9.0, 0.0, 1.0)[..., None]
    rgb = rgb * (1.0 - fade) + _BACKDROP * fade
    view = np.stack(dirs, -1)[i]
    rgb[b, i] = _shade_objects(obj, b, slot, nv, view, shadow[b, i][:, None])
    return rgb


def render_batch(scenes: list[dict[str, np.ndarray]], resolution: int,
                 opts: SceneOptions = SceneOptions()) -> np.ndarray:
    """Render scenes from `sample_scene`: uint8 [B, 3, resolution, resolution]."""
    ss = max(1, opts.supersample)
    obj = _Objects(scenes)
    rgb = _render_rays(obj, _camera(resolution * ss), _key_lights(opts.shadow_rays), ss)  # [B, P, 3]
    rgb = rgb.reshape(len(scenes), resolution, ss, resolution, ss, 3).mean(axis=(2, 4))
    srgb = np.clip(rgb, 0.0, 1.0) ** (1.0 / 2.2)
    return np.ascontiguousarray((srgb * 255.0 + 0.5).astype(np.uint8).transpose(0, 3, 1, 2))


def render_images(seed: int, indices, resolution: int, opts: SceneOptions = SceneOptions()) -> np.ndarray:
    """Images `indices` of the dataset with `seed`: uint8 [len(indices), 3, R, R]."""
    return render_batch([sample_scene(seed, int(i), opts) for i in indices], resolution, opts)


def _batch_size(resolution: int, opts: SceneOptions) -> int:
    rays = (resolution * max(1, opts.supersample)) ** 2
    return int(max(1, min(64, (1 << 16) // rays)))


def _render_job(args) -> np.ndarray:
    seed, start, stop, resolution, opts = args
    return render_images(seed, range(start, stop), resolution, opts)


def iter_scenes(seed: int, start: int, stop: int, resolution: int, workers: int | None = None,
                opts: SceneOptions = SceneOptions()) -> Iterator[np.ndarray]:
    """Yield images start..stop-1 in order, as uint8 batches [b, 3, R, R], rendered by `workers` processes."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
    bs = _batch_size(resolution, opts)
    jobs = [(seed, i, min(i + bs, stop), resolution, opts) for i in range(start, stop, bs)]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        yield from map(_render_job, jobs)
        return
    # Threads in numpy release the GIL only partly; processes scale across cores.
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_render_job, jobs)
