"""Procedural engineering drawings: deterministic from a seed, one of ``model_spec.CLASS_NAMES`` each.

A drawing is a sheet with a border, a title block, notes and a revision table, and two or three
orthographic views of a parametric part: outlines (thick), hidden lines (dashed), centre lines
(dash-dot), hatching on section views, dimension lines with arrowheads and numbers, and scanner-like
noise (paper tone, skew, blur, grain, specks). Part parameters, view scale, position and rotation
(multiples of 90 degrees), clutter and noise all vary with the seed, so classes are separable but not
trivially.

Geometry is laid out in sheet units (A3 = 420 units wide) and scaled to the requested pixel size, so a
drawing rendered at a reduced ``size`` is the same picture at lower resolution (tests and training use
that to stay fast). Pillow only.

Every line of text the generator draws (title-block fields, drawing number, scale, notes, dimension
values, diameters, symbol labels) is recorded as OCR ground truth: its exact string and its box in the
rendered image's pixels, after the scanner's skew (``render_text_image``). Recording draws nothing, so
``render_image`` gives the same pixels with or without it; ``extra_text=True`` adds more kinds of text
(tolerances with ``±``, angles with ``°``, part numbers, thread callouts, text turned 90 degrees) on top.

    >>> data, label = render_drawing(7)                     # PNG bytes, 1754 x 1240 (A4 at 150 dpi)
    >>> data, label = render_drawing(7, "gear", fmt="jpeg")
    >>> image, label, lines = render_text_image(7)          # lines: TextLine(text, kind, box, angle_deg)
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from worker.models.drawing_analyzer.model_spec import CLASS_NAMES

#: Default sheet size in pixels: A4 landscape at 150 dpi. A3 at 300 dpi is (4961, 3508).
DEFAULT_SIZE: Final = (1754, 1240)
#: Sheet width in drawing units (A3 in mm); everything is drawn in these units and scaled.
SHEET_UNITS: Final = 420.0

#: Dataset bases (``dataset(seed=...)``): training and the fixed held-out set never share a drawing.
TRAIN_SEED: Final = 1
HELDOUT_SEED: Final = 2
#: Size of the fixed held-out set that training, the parity check and the model card report on.
HELDOUT_COUNT: Final = 480

Format = Literal["png", "jpeg"]
Point = tuple[float, float]
Style = Literal["outline", "thin", "hidden", "center"]


# --- primitives in part coordinates (units, origin at the view's centre, y down) ------------------------
@dataclass(frozen=True)
class Line:
    a: Point
    b: Point
    style: Style = "outline"


@dataclass(frozen=True)
class Circle:
    c: Point
    r: float
    style: Style = "outline"


@dataclass(frozen=True)
class Poly:
    points: tuple[Point, ...]
    style: Style = "outline"


@dataclass(frozen=True)
class Hatch:
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class Dim:
    """A linear dimension between ``a`` and ``b``, its dimension line ``offset`` units to the side."""

    a: Point
    b: Point
    offset: float


@dataclass(frozen=True)
class Diameter:
    c: Point
    r: float
    angle_deg: float


Primitive = Line | Circle | Poly | Hatch | Dim | Diameter


@dataclass
class View:
    """One orthographic view: primitives around (0, 0) and its half extents in units."""

    half_w: float
    half_h: float
    items: list[Primitive] = field(default_factory=list)

    def add(self, *items: Primitive) -> None:
        self.items.extend(items)


def _rect(x0: float, y0: float, x1: float, y1: float, style: Style = "outline") -> Poly:
    return Poly(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), style)


def _cross(c: Point, r: float) -> list[Primitive]:
    """Centre-line cross through a hole, overhanging it a little."""
    ext = r + max(2.0, 0.3 * r)
    return [
        Line((c[0] - ext, c[1]), (c[0] + ext, c[1]), "center"),
        Line((c[0], c[1] - ext), (c[0], c[1] + ext), "center"),
    ]


# --- part classes -----------------------------------------------------------------------------------------
def _plate(rng: random.Random) -> list[View]:
    w, h, t = rng.uniform(70, 150), rng.uniform(45, 100), rng.uniform(4, 14)
    cols, rows = rng.randint(2, 4), rng.randint(2, 3)
    r = rng.uniform(2.5, min(w / cols, h / rows) * 0.22)
    mx, my = rng.uniform(0.12, 0.2) * w, rng.uniform(0.15, 0.25) * h
    xs = [-w / 2 + mx + i * (w - 2 * mx) / (cols - 1) for i in range(cols)]
    ys = [-h / 2 + my + j * (h - 2 * my) / (rows - 1) for j in range(rows)]
    front = View(w / 2, h / 2)
    c = rng.uniform(0, 6)
    front.add(
        Poly(
            (
                (-w / 2 + c, -h / 2),
                (w / 2 - c, -h / 2),
                (w / 2, -h / 2 + c),
                (w / 2, h / 2 - c),
                (w / 2 - c, h / 2),
                (-w / 2 + c, h / 2),
                (-w / 2, h / 2 - c),
                (-w / 2, -h / 2 + c),
            )
        )
    )
    for x in xs:
        for y in ys:
            front.add(Circle((x, y), r), *_cross((x, y), r))
    if rng.random() < 0.5:  # a central cut-out
        front.add(_rect(-w * 0.12, -h * 0.12, w * 0.12, h * 0.12))
    front.add(Dim((-w / 2, h / 2), (w / 2, h / 2), 12), Dim((w / 2, -h / 2), (w / 2, h / 2), 12))
    front.add(Dim((xs[0], -h / 2), (xs[1], -h / 2), -8), Diameter((xs[-1], ys[0]), r, rng.uniform(20, 70)))
    side = View(t / 2, h / 2)
    side.add(_rect(-t / 2, -h / 2, t / 2, h / 2))
    for y in ys:
        side.add(
            Line((-t / 2, y - r), (t / 2, y - r), "hidden"), Line((-t / 2, y + r), (t / 2, y + r), "hidden")
        )
        side.add(Line((-t / 2 - 3, y), (t / 2 + 3, y), "center"))
    side.add(Dim((-t / 2, h / 2), (t / 2, h / 2), 10))
    return [front, side]


def _shaft(rng: random.Random) -> list[View]:
    steps = rng.randint(3, 6)
    lengths = [rng.uniform(15, 45) for _ in range(steps)]
    peak = rng.randrange(steps)
    diams = sorted((rng.uniform(12, 45) for _ in range(steps)), reverse=True)
    diams = [diams[abs(i - peak)] for i in range(steps)]  # thickest at the peak step, thinner outwards
    total = sum(lengths)
    front = View(total / 2 + 6, max(diams) / 2)
    x = -total / 2
    for length, d in zip(lengths, diams, strict=True):
        front.add(_rect(x, -d / 2, x + length, d / 2))
        x += length
    front.add(Line((-total / 2 - 6, 0), (total / 2 + 6, 0), "center"))
    i = rng.randrange(steps)  # keyway on one step
    kx = -total / 2 + sum(lengths[:i])
    kl, kw = lengths[i] * 0.6, diams[i] * 0.25
    front.add(
        Poly(
            (
                (kx + lengths[i] * 0.2, -kw / 2),
                (kx + lengths[i] * 0.2 + kl, -kw / 2),
                (kx + lengths[i] * 0.2 + kl, kw / 2),
                (kx + lengths[i] * 0.2, kw / 2),
            ),
            "outline",
        )
    )
    if rng.random() < 0.6:  # centre drill, hidden
        front.add(
            Line((-total / 2, -2.5), (-total / 2 + 12, -2.5), "hidden"),
            Line((-total / 2, 2.5), (-total / 2 + 12, 2.5), "hidden"),
        )
    front.add(Dim((-total / 2, max(diams) / 2), (total / 2, max(diams) / 2), 12))
    front.add(Dim((kx, -diams[i] / 2), (kx + lengths[i], -diams[i] / 2), -9))
    rd = max(diams) / 2
    side = View(rd + 4, rd + 4)
    for d in sorted(set(diams), reverse=True)[:3]:
        side.add(Circle((0, 0), d / 2))
    side.add(*_cross((0, 0), rd))
    side.add(Diameter((0, 0), rd, rng.uniform(30, 60)))
    return [front, side]


def _flange(rng: random.Random) -> list[View]:
    od = rng.uniform(80, 150)
    bore = od * rng.uniform(0.25, 0.4)
    hub = bore + rng.uniform(10, 25)
    pcd = (od + hub) / 2
    n = rng.choice((4, 6, 8, 8, 10, 12))
    hr = rng.uniform(2.5, min(7.0, math.pi * pcd / n * 0.25))
    front = View(od / 2 + 4, od / 2 + 4)
    front.add(Circle((0, 0), od / 2), Circle((0, 0), bore / 2), Circle((0, 0), hub / 2, "thin"))
    front.add(Circle((0, 0), pcd / 2, "center"), *_cross((0, 0), od / 2))
    a0 = rng.uniform(0, math.pi / n)
    for k in range(n):
        a = a0 + 2 * math.pi * k / n
        front.add(Circle((pcd / 2 * math.cos(a), pcd / 2 * math.sin(a)), hr))
    front.add(
        Diameter((0, 0), od / 2, rng.uniform(20, 70)), Diameter((0, 0), bore / 2, rng.uniform(200, 250))
    )
    t, hl = rng.uniform(10, 22), rng.uniform(12, 35)
    side = View((t + hl) / 2, od / 2)
    x0 = -(t + hl) / 2
    side.add(_rect(x0, -od / 2, x0 + t, od / 2), _rect(x0 + t, -hub / 2, x0 + t + hl, hub / 2))
    # half section: hatch the upper wall between the bore and the outside
    side.add(Hatch(x0, -od / 2, x0 + t, -bore / 2), Hatch(x0 + t, -hub / 2, x0 + t + hl, -bore / 2))
    side.add(
        Line((x0, -bore / 2), (x0 + t + hl, -bore / 2)),
        Line((x0, bore / 2), (x0 + t + hl, bore / 2), "hidden"),
    )
    side.add(Line((x0 - 5, 0), (x0 + t + hl + 5, 0), "center"))
    side.add(Dim((x0, od / 2), (x0 + t + hl, od / 2), 10))
    return [front, side]


def _bracket(rng: random.Random) -> list[View]:
    a, b = rng.uniform(60, 120), rng.uniform(50, 100)
    t = rng.uniform(6, 15)
    depth = rng.uniform(30, 70)
    front = View(a / 2, b / 2)
    x0, y0 = -a / 2, -b / 2
    front.add(
        Poly(
            (
                (x0, y0),
                (x0 + t, y0),
                (x0 + t, y0 + b - t),
                (x0 + a, y0 + b - t),
                (x0 + a, y0 + b),
                (x0, y0 + b),
            )
        )
    )
    if rng.random() < 0.7:  # gusset
        g = rng.uniform(0.3, 0.6) * min(a, b)
        front.add(Line((x0 + t, y0 + b - t - g), (x0 + t + g, y0 + b - t), "outline"))
    hr = rng.uniform(2.5, t * 0.45)
    hy = y0 + rng.uniform(0.2, 0.5) * b
    hx = x0 + rng.uniform(0.55, 0.85) * a
    front.add(
        Line((x0, hy - hr), (x0 + t, hy - hr), "hidden"), Line((x0, hy + hr), (x0 + t, hy + hr), "hidden")
    )
    front.add(
        Line((hx - hr, y0 + b - t), (hx - hr, y0 + b), "hidden"),
        Line((hx + hr, y0 + b - t), (hx + hr, y0 + b), "hidden"),
    )
    front.add(
        Line((x0 - 3, hy), (x0 + t + 3, hy), "center"), Line((hx, y0 + b - t - 3), (hx, y0 + b + 3), "center")
    )
    front.add(
        Dim((x0, y0 + b), (x0 + a, y0 + b), 12),
        Dim((x0, y0), (x0, y0 + b), -12),
        Dim((x0, y0), (x0 + t, y0), -8),
    )
    side = View(depth / 2, b / 2)
    side.add(
        _rect(-depth / 2, y0, depth / 2, y0 + b), Line((-depth / 2, y0 + b - t), (depth / 2, y0 + b - t))
    )
    slots = rng.randint(1, 2)
    for k in range(slots):
        cx = -depth / 2 + depth * (k + 1) / (slots + 1)
        side.add(Circle((cx, hy), hr), *_cross((cx, hy), hr))
    side.add(Dim((-depth / 2, y0 + b), (depth / 2, y0 + b), 12))
    top = View(a / 2, depth / 2)
    top.add(
        _rect(-a / 2, -depth / 2, a / 2, depth / 2), Line((-a / 2 + t, -depth / 2), (-a / 2 + t, depth / 2))
    )
    for k in range(slots):
        cy = -depth / 2 + depth * (k + 1) / (slots + 1)
        top.add(Circle((hx, cy), hr), *_cross((hx, cy), hr))
    return [front, side, top] if rng.random() < 0.6 else [front, side]


def _gear(rng: random.Random) -> list[View]:
    teeth = rng.randint(14, 40)
    od = rng.uniform(70, 150)
    depth = od * rng.uniform(0.05, 0.09)
    root = od / 2 - depth
    pts: list[Point] = []
    for k in range(teeth):
        base = 2 * math.pi * k / teeth
        for frac, rad in ((0.0, root), (0.15, root), (0.3, od / 2), (0.55, od / 2), (0.7, root)):
            a = base + frac * 2 * math.pi / teeth
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    bore = od * rng.uniform(0.15, 0.3)
    front = View(od / 2 + 4, od / 2 + 4)
    front.add(Poly(tuple(pts)), Circle((0, 0), od / 2 - depth / 2, "center"), Circle((0, 0), bore / 2))
    kw = bore * 0.3
    front.add(_rect(-kw / 2, -bore / 2 - kw * 0.6, kw / 2, -bore / 2 + 1))
    front.add(*_cross((0, 0), od / 2))
    if rng.random() < 0.5:  # lightening holes
        hub = bore * 1.8
        n = rng.choice((4, 5, 6))
        rr = (root - hub / 2) * 0.3
        for k in range(n):
            a = 2 * math.pi * k / n
            cc = ((root + hub / 2) / 2 * math.cos(a), (root + hub / 2) / 2 * math.sin(a))
            front.add(Circle(cc, rr))
    front.add(Diameter((0, 0), od / 2, rng.uniform(20, 70)))
    width = rng.uniform(12, 35)
    side = View(width / 2, od / 2)
    side.add(
        _rect(-width / 2, -od / 2, width / 2, od / 2),
        Line((-width / 2, -root), (width / 2, -root), "thin"),
        Line((-width / 2, root), (width / 2, root), "thin"),
    )
    side.add(
        Hatch(-width / 2, -root, width / 2, -bore / 2), Line((-width / 2, -bore / 2), (width / 2, -bore / 2))
    )
    side.add(Line((-width / 2, bore / 2), (width / 2, bore / 2), "hidden"))
    side.add(
        Line((-width / 2 - 5, 0), (width / 2 + 5, 0), "center"),
        Dim((-width / 2, od / 2), (width / 2, od / 2), 10),
    )
    return [front, side]


def _pipe_fitting(rng: random.Random) -> list[View]:
    od = rng.uniform(25, 50)
    wall = od * rng.uniform(0.1, 0.2)
    arm = rng.uniform(35, 70)
    fl = od * rng.uniform(1.3, 1.7)  # flange diameter at the ends
    ft = rng.uniform(4, 9)
    tee = rng.random() < 0.5
    front = View(arm + ft, arm + ft if tee else arm / 2 + od / 2 + ft)
    o, i = od / 2, od / 2 - wall
    # horizontal run; an elbow turns down at x = 0, a tee carries on to the right
    front.add(Line((-arm, -o), (arm if tee else o, -o)), Line((-arm, o), (-o, o)))
    front.add(Line((-arm, -i), (arm if tee else i, -i), "hidden"), Line((-arm, i), (-i, i), "hidden"))
    front.add(
        _rect(-arm - ft, -fl / 2, -arm, fl / 2),
        Line((-arm - ft - 5, 0), (arm + ft + 5 if tee else 5, 0), "center"),
    )
    if tee:
        front.add(Line((o, o), (arm, o)), Line((i, i), (arm, i), "hidden"))
        front.add(_rect(arm, -fl / 2, arm + ft, fl / 2))
    # the branch going down
    front.add(Line((-o, o), (-o, arm)), Line((o, o if tee else -o), (o, arm)))
    front.add(Line((-i, i), (-i, arm), "hidden"), Line((i, i if tee else -i), (i, arm), "hidden"))
    front.add(_rect(-fl / 2, arm, fl / 2, arm + ft), Line((0, -o - 5), (0, arm + ft + 5), "center"))
    front.add(Dim((-arm - ft, -fl / 2), (0, -fl / 2), -10), Diameter((0, arm), fl / 2, rng.uniform(20, 60)))
    front.half_h = arm + ft
    side = View(fl / 2 + 3, fl / 2 + 3)
    side.add(Circle((0, 0), fl / 2), Circle((0, 0), o), Circle((0, 0), i, "hidden"), *_cross((0, 0), fl / 2))
    nb = rng.choice((0, 4, 4, 6))
    for k in range(nb):
        a = 2 * math.pi * k / nb + math.pi / 4
        side.add(
            Circle(((o + fl / 2) / 2 * math.cos(a), (o + fl / 2) / 2 * math.sin(a)), (fl / 2 - o) * 0.22)
        )
    return [front, side]


_BUILDERS: Final[dict[str, Callable[[random.Random], list[View]]]] = {
    "plate": _plate,
    "shaft": _shaft,
    "flange": _flange,
    "bracket": _bracket,
    "gear": _gear,
    "pipe_fitting": _pipe_fitting,
}
assert tuple(_BUILDERS) == CLASS_NAMES, "drawings and model_spec must list the same classes in order"


# --- text and its ground truth ------------------------------------------------------------------------------
Quad = tuple[Point, Point, Point, Point]


@dataclass(frozen=True)
class TextLine:
    """One line of text on a rendered sheet: the string drawn and where it is.

    ``box``: the text's layout box (Pillow's ``textbbox``: the ink's width, ascender to descender) as four
    corners in the rendered image's pixels, clockwise from the image-top-left one (the order a text
    detector's boxes come in); ``angle_deg``: 0 for text read left to right, 90 for text read bottom to
    top (turned counter-clockwise).
    """

    text: str
    kind: str
    box: Quad
    angle_deg: int = 0


class _TextDraw(ImageDraw.ImageDraw):
    """An ``ImageDraw`` that records each line of text written through ``write`` (pixels unchanged)."""

    def __init__(self, image: Image.Image) -> None:
        super().__init__(image)
        self.lines: list[TextLine] = []

    def record(self, line: TextLine) -> None:
        self.lines.append(line)


def _write(
    draw: ImageDraw.ImageDraw,
    at: Point,
    value: str,
    *,
    fill: int,
    font: ImageFont.FreeTypeFont,
    kind: str,
    anchor: str | None = None,
) -> None:
    """``draw.text`` that also records the line when ``draw`` keeps ground truth."""
    if isinstance(draw, _TextDraw):
        x0, y0, x1, y1 = draw.textbbox(at, value, font=font, anchor=anchor)
        draw.record(TextLine(value, kind, ((x0, y0), (x1, y0), (x1, y1), (x0, y1))))
    draw.text(at, value, fill=fill, font=font, anchor=anchor)


def _skewed(line: TextLine, angle_deg: float, size: tuple[int, int]) -> TextLine:
    """``line`` as ``Image.rotate(angle_deg)`` (about the centre, same size) moves it."""
    if angle_deg == 0.0:
        return line
    # Image.rotate fills output point p from source point R (p - c) + c, R the rotation by t = -angle;
    # a source point q therefore lands at R^T (q - c) + c.
    t = -math.radians(angle_deg)
    cos_t, sin_t = math.cos(t), math.sin(t)
    cx, cy = size[0] / 2, size[1] / 2
    moved = tuple(
        (cos_t * (x - cx) - sin_t * (y - cy) + cx, sin_t * (x - cx) + cos_t * (y - cy) + cy)
        for x, y in line.box
    )
    return TextLine(line.text, line.kind, (moved[0], moved[1], moved[2], moved[3]), line.angle_deg)


# --- rendering ----------------------------------------------------------------------------------------------
class _Canvas:
    """Draws primitives of one view, mapping part units -> pixels (scale, 90-degree turns, translation)."""

    def __init__(
        self, draw: ImageDraw.ImageDraw, px_per_unit: float, rng: random.Random, font: ImageFont.FreeTypeFont
    ):
        self.draw = draw
        self.k = px_per_unit
        self.rng = rng
        self.font = font
        self.thick = max(1, round(0.55 * px_per_unit))
        self.thin = max(1, round(0.25 * px_per_unit))
        self.ink = rng.randint(0, 45)
        self.origin: Point = (0.0, 0.0)
        self.scale = 1.0
        self.turns = 0

    def place(self, origin: Point, scale: float, turns: int) -> None:
        self.origin, self.scale, self.turns = origin, scale, turns % 4

    def px(self, p: Point) -> Point:
        x, y = p
        for _ in range(self.turns):
            x, y = -y, x
        return (self.origin[0] + x * self.scale * self.k, self.origin[1] + y * self.scale * self.k)

    def width(self, style: Style) -> int:
        return self.thick if style == "outline" else self.thin

    def segment(self, a: Point, b: Point, style: Style) -> None:
        """A line in pixel coordinates with the style's dash pattern."""
        w = self.width(style)
        if style in ("outline", "thin"):
            self.draw.line((a, b), fill=self.ink, width=w)
            return
        pattern = (3.0, 1.5) if style == "hidden" else (7.0, 1.2, 0.8, 1.2)
        pattern_px = [v * self.k for v in pattern]
        length = math.dist(a, b)
        if length < 1e-6:
            return
        ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
        pos, idx = 0.0, 0
        while pos < length:
            step = pattern_px[idx % len(pattern_px)]
            end = min(length, pos + step)
            if idx % 2 == 0:
                self.draw.line(
                    ((a[0] + ux * pos, a[1] + uy * pos), (a[0] + ux * end, a[1] + uy * end)),
                    fill=self.ink,
                    width=w,
                )
            pos, idx = end, idx + 1

    def circle(self, c: Point, r: float, style: Style) -> None:
        cx, cy = self.px(c)
        rp = r * self.scale * self.k
        box = (cx - rp, cy - rp, cx + rp, cy + rp)
        if style in ("outline", "thin") or rp < 3:
            self.draw.ellipse(box, outline=self.ink, width=self.width(style))
            return
        dash = (3.0 if style == "hidden" else 7.0) * self.k / rp * 180 / math.pi
        gap = 1.5 * self.k / rp * 180 / math.pi
        a = self.rng.uniform(0, 30)
        while a < 360:
            self.draw.arc(box, a, min(360, a + dash), fill=self.ink, width=self.width(style))
            a += dash + gap

    def hatch(self, h: Hatch) -> None:
        (x0, y0), (x1, y1) = self.px((h.x0, h.y0)), self.px((h.x1, h.y1))
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        spacing = 2.2 * self.k
        c = x0 - (y1 - y0)
        while c < x1:  # lines x - y' = c with y' measured from y0, clipped to the box
            p0 = (max(x0, c), y0 + max(0.0, x0 - c))
            p1 = (min(x1, c + (y1 - y0)), y0 + min(y1 - y0, x1 - c))
            if p1[0] > p0[0]:
                self.draw.line((p0, p1), fill=self.ink, width=self.thin)
            c += spacing

    def arrow(self, tip: Point, tail: Point) -> None:
        length = math.dist(tip, tail) or 1.0
        ux, uy = (tail[0] - tip[0]) / length, (tail[1] - tip[1]) / length
        al, aw = 3.0 * self.k, 0.9 * self.k
        base = (tip[0] + ux * al, tip[1] + uy * al)
        self.draw.polygon(
            [tip, (base[0] - uy * aw, base[1] + ux * aw), (base[0] + uy * aw, base[1] - ux * aw)],
            fill=self.ink,
        )

    def text(self, at: Point, value: str, kind: str) -> None:
        _write(self.draw, at, value, fill=self.ink, font=self.font, anchor="mm", kind=kind)

    def dim(self, d: Dim) -> None:
        a, b = self.px(d.a), self.px(d.b)
        length = math.dist(a, b)
        if length < 2:
            return
        nx, ny = -(b[1] - a[1]) / length, (b[0] - a[0]) / length
        off = d.offset * self.k  # offsets are in sheet units, not scaled with the part
        a2, b2 = (a[0] + nx * off, a[1] + ny * off), (b[0] + nx * off, b[1] + ny * off)
        ext = math.copysign(2.0 * self.k, off)
        self.draw.line((a, (a2[0] + nx * ext, a2[1] + ny * ext)), fill=self.ink, width=self.thin)
        self.draw.line((b, (b2[0] + nx * ext, b2[1] + ny * ext)), fill=self.ink, width=self.thin)
        self.draw.line((a2, b2), fill=self.ink, width=self.thin)
        self.arrow(a2, b2)
        self.arrow(b2, a2)
        value = math.dist(d.a, d.b)
        mid = ((a2[0] + b2[0]) / 2 + nx * 3.0 * self.k, (a2[1] + b2[1]) / 2 + ny * 3.0 * self.k)
        self.text(mid, f"{value:.1f}" if self.rng.random() < 0.3 else f"{value:.0f}", "dimension")

    def diameter(self, d: Diameter) -> None:
        c = self.px(d.c)
        rp = d.r * self.scale * self.k
        a = math.radians(d.angle_deg)
        tip = (c[0] + rp * math.cos(a), c[1] - rp * math.sin(a))
        knee = (c[0] + (rp + 9 * self.k) * math.cos(a), c[1] - (rp + 9 * self.k) * math.sin(a))
        end = (knee[0] + math.copysign(10 * self.k, math.cos(a)), knee[1])
        self.draw.line((tip, knee, end), fill=self.ink, width=self.thin)
        self.arrow(tip, knee)
        self.text(
            (end[0] + math.copysign(6 * self.k, math.cos(a)), end[1] - 2.5 * self.k),
            f"DIA {2 * d.r:.0f}",
            "diameter",
        )

    def render(self, item: Primitive) -> None:
        if isinstance(item, Line):
            self.segment(self.px(item.a), self.px(item.b), item.style)
        elif isinstance(item, Circle):
            self.circle(item.c, item.r, item.style)
        elif isinstance(item, Poly):
            pts = [self.px(p) for p in item.points]
            for p, q in zip(pts, pts[1:] + pts[:1], strict=True):
                self.segment(p, q, item.style)
        elif isinstance(item, Hatch):
            self.hatch(item)
        elif isinstance(item, Dim):
            self.dim(item)
        else:
            self.diameter(item)


def _font(px_per_unit: float, height_units: float) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=max(6, round(height_units * px_per_unit)))
    assert isinstance(font, ImageFont.FreeTypeFont)
    return font


def _sheet(
    draw: ImageDraw.ImageDraw, k: float, w_u: float, h_u: float, *, rng: random.Random, ink: int
) -> tuple[float, float]:
    """Border, title block, notes, revision table; returns the drawing area's lower-right corner (units)."""
    m = 10.0
    draw.rectangle((m * k, m * k, (w_u - m) * k, (h_u - m) * k), outline=ink, width=max(1, round(0.7 * k)))
    tb_w, tb_h = rng.uniform(150, 185), rng.uniform(32, 45)
    x0, y0 = w_u - m - tb_w, h_u - m - tb_h
    thin = max(1, round(0.25 * k))
    draw.rectangle((x0 * k, y0 * k, (w_u - m) * k, (h_u - m) * k), outline=ink, width=max(1, round(0.5 * k)))
    rows = rng.randint(3, 4)
    for r in range(1, rows):
        yy = y0 + tb_h * r / rows
        draw.line((x0 * k, yy * k, (w_u - m) * k, yy * k), fill=ink, width=thin)
    for frac in (0.3, 0.62):
        xx = x0 + tb_w * frac
        draw.line((xx * k, y0 * k, xx * k, (h_u - m) * k), fill=ink, width=thin)
    small, big = _font(k, 3.0), _font(k, 5.0)
    labels = ("TITLE", "DRAWING NO.", "SCALE", "MATERIAL", "DRAWN", "CHECKED", "DATE", "SHEET")
    for r in range(rows):
        for frac in (0.0, 0.3, 0.62):
            _write(
                draw,
                ((x0 + tb_w * frac + 1.5) * k, (y0 + tb_h * r / rows + 1.2) * k),
                rng.choice(labels),
                fill=ink,
                font=small,
                kind="title_block",
            )
    _write(
        draw,
        ((x0 + tb_w * 0.33) * k, (y0 + tb_h * 0.5) * k),
        f"DWG-{rng.randint(1000, 99999)}-{rng.choice('ABCDE')}",
        fill=ink,
        font=big,
        kind="drawing_number",
    )
    _write(
        draw,
        ((x0 + tb_w * 0.66) * k, (y0 + tb_h * 0.75) * k),
        f"1:{rng.choice((1, 2, 5, 10))}",
        fill=ink,
        font=big,
        kind="scale",
    )
    if rng.random() < 0.8:  # general notes, bottom left
        for i in range(rng.randint(2, 5)):
            note = rng.choice(
                (
                    "ALL DIMENSIONS IN MM",
                    "DEBURR ALL EDGES",
                    "UNTOLERANCED +/-0.2",
                    "SURFACE Ra 3.2",
                    "MATERIAL S355J2",
                    "REMOVE SHARP CORNERS",
                    "HEAT TREAT 45 HRC",
                )
            )
            at = ((m + 4) * k, (h_u - m - 6 - 5 * i) * k)
            _write(draw, at, f"{i + 1}. {note}", fill=ink, font=small, kind="note")
    if rng.random() < 0.5:  # revision table, top right
        rw, rh = rng.uniform(60, 90), 5.0 * rng.randint(2, 4)
        draw.rectangle(((w_u - m - rw) * k, m * k, (w_u - m) * k, (m + rh) * k), outline=ink, width=thin)
        for yy in range(1, int(rh // 5)):
            draw.line(
                ((w_u - m - rw) * k, (m + 5 * yy) * k, (w_u - m) * k, (m + 5 * yy) * k), fill=ink, width=thin
            )
    return w_u - m, y0


def _layout(
    views: list[View], area: tuple[float, float, float, float], rng: random.Random
) -> list[tuple[Point, float, int]]:
    """Scale, rotation and centre (units) for each view: front left, side to its right, top below."""
    ax0, ay0, ax1, ay1 = area
    turns = rng.choice((0, 0, 1, 2, 3))
    dims = [(v.half_w, v.half_h) if turns % 2 == 0 else (v.half_h, v.half_w) for v in views]
    gap = 28.0
    need_w = 2 * dims[0][0] + gap + 2 * dims[1][0] + 2 * gap
    need_h = 2 * dims[0][1] + 2 * gap + (2 * dims[2][1] + gap if len(views) > 2 else 0)
    fit = min((ax1 - ax0) / need_w, (ay1 - ay0) / need_h)
    scale = min(fit, 3.0) * rng.uniform(0.6, 0.95)
    total_w = (2 * dims[0][0] + gap + 2 * dims[1][0]) * scale
    total_h = (2 * dims[0][1] + (2 * dims[2][1] + gap if len(views) > 2 else 0)) * scale
    left = ax0 + gap * scale + rng.uniform(0, max(0.0, (ax1 - ax0) - total_w - 2 * gap * scale))
    top = ay0 + gap * scale + rng.uniform(0, max(0.0, (ay1 - ay0) - total_h - 2 * gap * scale))
    fx, fy = left + dims[0][0] * scale, top + dims[0][1] * scale
    placed = [((fx, fy), scale, turns), ((fx + (dims[0][0] + gap + dims[1][0]) * scale, fy), scale, turns)]
    if len(views) > 2:
        placed.append(((fx, fy + (dims[0][1] + gap + dims[2][1]) * scale), scale, turns))
    return placed


def _scan(image: Image.Image, rng: random.Random) -> Image.Image:
    """Scanner-like degradation: skew, paper tone, blur, grain and specks."""
    return _scan_skewed(image, rng)[0]


def _scan_skewed(image: Image.Image, rng: random.Random) -> tuple[Image.Image, float]:
    """``_scan``, also returning the skew it applied (degrees, counter-clockwise; 0 when none)."""
    size = image.size
    k = size[0] / SHEET_UNITS
    skew = 0.0
    if rng.random() < 0.7:
        skew = rng.uniform(-1.2, 1.2)
        image = image.rotate(skew, resample=Image.Resampling.BILINEAR, fillcolor=255)
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8) * max(1.0, k / 4)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(20, 300)):  # dust and specks
        x, y, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(0.2, 0.8) * k
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rng.randint(0, 160))
    shade = rng.uniform(0.0, 0.1)  # uneven lighting: a gradient from one edge, up to 25 grey levels
    tone = Image.linear_gradient("L").point(lambda v: round(v * shade)).rotate(rng.choice((0, 90, 180, 270)))
    image = ImageChops.subtract(image, tone.resize(size, Image.Resampling.BILINEAR))
    # Grain from a seeded generator at half resolution (Pillow's effect_noise is unseeded and slow).
    amp = rng.randint(4, 18)
    noise = np.random.default_rng(rng.getrandbits(64)).integers(
        128 - amp, 128 + amp + 1, size=((size[1] + 1) // 2, (size[0] + 1) // 2), dtype=np.uint8
    )
    grain = Image.fromarray(noise).resize(size, Image.Resampling.NEAREST)
    return ImageChops.add(image, grain, scale=1.0, offset=-128), skew


def render_image(
    seed: int, part_class: str | None = None, *, size: tuple[int, int] = DEFAULT_SIZE
) -> tuple[Image.Image, str]:
    """Render one drawing (mode ``L``) and return it with its class name."""
    sheet = _unscanned(seed, part_class, size)
    return _scan(sheet.image, sheet.rng), sheet.label


@dataclass(frozen=True)
class _Sheet:
    """A drawn sheet before the scanner: the generator state the scan (and symbols) continue from."""

    image: Image.Image
    label: str
    rng: random.Random
    canvas: _Canvas
    #: The drawing area inside the border, above the title block (pixels): x0, y0, x1, y1.
    area_px: tuple[float, float, float, float]


def _unscanned(seed: int, part_class: str | None, size: tuple[int, int]) -> _Sheet:
    rng = random.Random(seed)
    label = part_class if part_class is not None else rng.choice(CLASS_NAMES)
    if label not in _BUILDERS:
        raise ValueError(f"unknown part class {label!r}; expected one of {CLASS_NAMES}")
    width, height = size
    k = width / SHEET_UNITS
    w_u, h_u = SHEET_UNITS, height / k
    image = Image.new("L", size, rng.randint(232, 255))
    draw = _TextDraw(image)
    canvas = _Canvas(draw, k, rng, _font(k, rng.uniform(3.0, 4.2)))
    right, bottom = _sheet(draw, k, w_u, h_u, rng=rng, ink=canvas.ink)
    views = _BUILDERS[label](rng)
    for view, (origin, scale, turns) in zip(
        views, _layout(views, (10.0, 10.0, right, bottom), rng), strict=True
    ):
        canvas.place((origin[0] * k, origin[1] * k), scale, turns)
        for item in view.items:
            canvas.render(item)
    return _Sheet(image, label, rng, canvas, (10.0 * k, 10.0 * k, right * k, bottom * k))


def encode(image: Image.Image, fmt: Format = "png", *, quality: int = 85) -> bytes:
    """PNG (lossless, fast compression) or JPEG bytes of a rendered drawing."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, "PNG", compress_level=1)
    elif fmt == "jpeg":
        image.save(buf, "JPEG", quality=quality)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected 'png' or 'jpeg'")
    return buf.getvalue()


def render_drawing(
    seed: int, part_class: str | None = None, *, size: tuple[int, int] = DEFAULT_SIZE, fmt: Format = "png"
) -> tuple[bytes, str]:
    """Render one drawing and encode it; returns ``(bytes, class name)``. Same seed, same bytes."""
    image, label = render_image(seed, part_class, size=size)
    return encode(image, fmt, quality=70 + seed % 26), label


def render_text_image(
    seed: int,
    part_class: str | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    extra_text: bool = False,
) -> tuple[Image.Image, str, tuple[TextLine, ...]]:
    """``render_image(seed, part_class)`` with the ground truth of every line of text drawn on it.

    Without ``extra_text`` the image is ``render_image``'s, pixel for pixel. With it, 4-8 more lines
    (``EXTRA_TEXT_KINDS``; about a third turned 90 degrees) are drawn at free spots of the drawing area
    before the scan, from a generator of their own, so the drawing and its scan stay the same.
    """
    sheet = _unscanned(seed, part_class, size)
    if extra_text:
        _place_extra_text(sheet, random.Random(seed ^ _EXTRA_TEXT_SALT))
    image, skew = _scan_skewed(sheet.image, sheet.rng)
    draw = sheet.canvas.draw
    assert isinstance(draw, _TextDraw)
    return image, sheet.label, tuple(_skewed(line, skew, size) for line in draw.lines)


def render_text_drawing(
    seed: int,
    part_class: str | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    fmt: Format = "png",
    extra_text: bool = False,
) -> tuple[bytes, str, tuple[TextLine, ...]]:
    """``render_text_image`` encoded as ``render_drawing`` encodes: ``(bytes, class name, text lines)``."""
    image, label, lines = render_text_image(seed, part_class, size=size, extra_text=extra_text)
    return encode(image, fmt, quality=70 + seed % 26), label, lines


#: What ``extra_text`` adds, by kind: strings with the symbols drawings use (the default font has ``±``
#: and ``°`` but no ``Ø``, which the OCR dictionary lacks too).
EXTRA_TEXT_KINDS: Final = ("tolerance", "angle", "radius", "thread", "part_number", "chamfer")
_EXTRA_TEXT_SALT: Final = 0x7E47_5EED


def _extra_string(kind: str, rng: random.Random) -> str:
    if kind == "tolerance":
        return f"{rng.uniform(5, 200):.1f} ±{rng.choice(('0.02', '0.05', '0.1', '0.2'))}"
    if kind == "angle":
        return f"{rng.choice((15, 30, 45, 60, 90, 120, 135))}°"
    if kind == "radius":
        return f"R{rng.randint(1, 40)}"
    if kind == "thread":
        return f"{rng.choice((2, 3, 4, 6, 8))}x M{rng.choice((3, 4, 5, 6, 8, 10, 12))}"
    if kind == "part_number":
        return f"P/N {rng.randint(1000, 9999)}-{rng.randint(100, 999)}-{rng.randint(1, 99):02d}"
    return f"CHAMFER {rng.choice(('0.5', '1', '2'))}x45°"


def _place_extra_text(sheet: _Sheet, rng: random.Random) -> None:
    """Draw 4-8 ``EXTRA_TEXT_KINDS`` lines where the unscanned sheet has no ink, recording each."""
    draw = sheet.canvas.draw
    assert isinstance(draw, _TextDraw)
    k, ink = sheet.canvas.k, sheet.canvas.ink
    paper = int(sheet.image.getpixel((0, 0)))  # type: ignore[arg-type]  # mode L: an int
    ax0, ay0, ax1, ay1 = sheet.area_px
    margin = 1.5 * k
    for _ in range(rng.randint(4, 8)):
        kind = rng.choice(EXTRA_TEXT_KINDS)
        value, turned = _extra_string(kind, rng), rng.random() < 0.35
        font = _font(k, rng.uniform(3.0, 4.2))
        x0, y0, x1, y1 = font.getbbox(value)
        left, top, right, bottom = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
        w, h = (bottom - top, right - left) if turned else (right - left, bottom - top)
        for _attempt in range(40):
            x, y = rng.uniform(ax0 + margin, ax1 - margin - w), rng.uniform(ay0 + margin, ay1 - margin - h)
            window = sheet.image.crop(
                (int(x - margin), int(y - margin), int(x + w + margin) + 1, int(y + h + margin) + 1)
            )
            if int(np.asarray(window).min()) >= paper:  # nothing drawn there yet (extra lines included)
                break
        else:
            continue
        if not turned:
            _write(draw, (x - left, y - top), value, fill=ink, font=font, kind=kind)
            continue
        mask = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(mask).text((-left, -top), value, fill=255, font=font)
        px, py = round(x), round(y)
        sheet.image.paste(ink, (px, py, px + w, py + h), mask.rotate(90, expand=True))
        corners = ((px, py), (px + w, py), (px + w, py + h), (px, py + h))
        draw.record(TextLine(value, kind, corners, angle_deg=90))


def dataset_labels(count: int, *, seed: int = 0) -> list[str]:
    """The class of each item of ``dataset(count, seed=seed)``: balanced, cycling through CLASS_NAMES."""
    return [CLASS_NAMES[i % len(CLASS_NAMES)] for i in range(count)]


def dataset_seed(index: int, *, seed: int = 0) -> int:
    """The drawing seed of item ``index`` of the dataset with base ``seed`` (disjoint across bases < 1e6)."""
    return seed * 1_000_003 + index


def dataset(
    count: int, *, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE, fmt: Format | Literal["mixed"] = "png"
) -> Iterator[tuple[bytes, str]]:
    """A balanced, deterministic set of ``count`` encoded drawings (``mixed``: every third one is JPEG)."""
    for i, label in enumerate(dataset_labels(count, seed=seed)):
        item_fmt: Format = ("jpeg" if i % 3 == 2 else "png") if fmt == "mixed" else fmt
        yield render_drawing(dataset_seed(i, seed=seed), label, size=size, fmt=item_fmt)


# --- negatives: pages and images that are not part drawings (issue 23) ----------------------------------
#: Kinds of non-drawing input the model is trained to answer ``not_a_drawing`` on.
NEGATIVE_KINDS: Final[tuple[str, ...]] = ("blank", "text", "table", "title_block", "photo", "noise", "crop")
#: Kinds that training never sees: only the held-out sets carry them, to measure unseen inputs.
UNSEEN_NEGATIVE_KINDS: Final[tuple[str, ...]] = ("scribble", "graph_paper", "chart", "barcode")
ALL_NEGATIVE_KINDS: Final = NEGATIVE_KINDS + UNSEEN_NEGATIVE_KINDS

_TEXT: Final = (
    "the part shall be inspected before assembly and all surfaces cleaned of oil grease and swarf "
    "supplier quality report delivery note order number quantity unit price total page of "
    "revision approved released customer project meeting minutes agenda action owner due date "
    "steel aluminium bronze bolt nut washer bearing seal gasket spring pin key housing cover"
)
_WORDS: Final = tuple(_TEXT.split())


def _paper(size: tuple[int, int], rng: random.Random) -> tuple[Image.Image, ImageDraw.ImageDraw, float, int]:
    image = Image.new("L", size, rng.randint(225, 255))
    return image, ImageDraw.Draw(image), size[0] / SHEET_UNITS, rng.randint(0, 60)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def _neg_blank(size: tuple[int, int], rng: random.Random) -> Image.Image:
    image, draw, k, ink = _paper(size, rng)
    if rng.random() < 0.25:  # a truly empty page, no scanner at all
        return image
    if rng.random() < 0.3:  # a page number or a stray mark
        draw.text((size[0] / 2, size[1] - 12 * k), str(rng.randint(1, 99)), fill=ink, font=_font(k, 3.5))
    return _scan(image, rng)


def _neg_text(size: tuple[int, int], rng: random.Random) -> Image.Image:
    image, draw, k, ink = _paper(size, rng)
    height = rng.uniform(3.0, 7.0)
    font, head = _font(k, height), _font(k, height * 1.6)
    margin, y = rng.uniform(15, 40), rng.uniform(15, 40)
    draw.text((margin * k, y * k), _words(rng, rng.randint(2, 5)).upper(), fill=ink, font=head)
    y += height * 3
    h_u = size[1] / k
    while y < h_u - margin:
        if rng.random() < 0.12:  # paragraph break
            y += height * 1.5
            continue
        line = _words(rng, rng.randint(4, 14))
        draw.text((margin * k, y * k), line, fill=ink, font=font)
        y += height * rng.uniform(1.3, 1.8)
    return _scan(image, rng)


def _neg_table(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A parts list / bill of materials: ruled rows and columns with text in the cells."""
    image, draw, k, ink = _paper(size, rng)
    w_u, h_u = SHEET_UNITS, size[1] / k
    x0, y0 = rng.uniform(10, 40), rng.uniform(10, 40)
    x1, row_h = w_u - rng.uniform(10, 40), rng.uniform(6, 12)
    rows = int((h_u - y0 - rng.uniform(10, 60)) // row_h)
    cols = sorted(rng.uniform(x0, x1) for _ in range(rng.randint(2, 6)))
    width = max(1, round(0.3 * k))
    font = _font(k, row_h * 0.45)
    headers = ("ITEM", "QTY", "PART NO.", "DESCRIPTION", "MATERIAL", "MASS", "REMARKS")
    for r in range(rows + 1):
        y = y0 + r * row_h
        draw.line((x0 * k, y * k, x1 * k, y * k), fill=ink, width=width * (2 if r in (0, 1) else 1))
    for x in (x0, *cols, x1):
        draw.line((x * k, y0 * k, x * k, (y0 + rows * row_h) * k), fill=ink, width=width)
    edges = (x0, *cols)
    for r in range(rows):
        for c, x in enumerate(edges):
            text = rng.choice(headers) if r == 0 else (str(r) if c == 0 else _words(rng, rng.randint(1, 3)))
            draw.text(((x + 1.5) * k, (y0 + r * row_h + row_h * 0.25) * k), text, fill=ink, font=font)
    return _scan(image, rng)


def _neg_title_block(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A drawing sheet with its border, title block and notes but no views (a cover or empty sheet)."""
    image, draw, k, ink = _paper(size, rng)
    _sheet(draw, k, SHEET_UNITS, size[1] / k, rng=rng, ink=ink)
    return _scan(image, rng)


def _smooth_field(size: tuple[int, int], rng: random.Random, channels: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse noise upsampled bicubically (photo-like shading)."""
    gen = np.random.default_rng(rng.getrandbits(64))
    coarse = gen.random((max(2, cells * size[1] // size[0]), cells, channels))
    layers = [
        Image.fromarray((coarse[:, :, c] * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
        for c in range(channels)
    ]
    return np.stack([np.asarray(layer, dtype=np.float32) / 255.0 for layer in layers], axis=-1)


def _neg_photo(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Photo-like: smooth colour shading, a few soft blobs (objects) and sensor noise, in RGB."""
    field = _smooth_field(size, rng, 3, rng.randint(3, 12))
    image = Image.fromarray((field * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 6)):
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        r = rng.uniform(0.05, 0.3) * size[0]
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse((x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(2, 12) * size[0] / 877))
    grain = np.random.default_rng(rng.getrandbits(64)).normal(0, rng.uniform(1, 8), (size[1], size[0], 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _neg_noise(size: tuple[int, int], rng: random.Random) -> Image.Image:
    gen = np.random.default_rng(rng.getrandbits(64))
    cell = rng.choice((1, 1, 2, 4, 8))
    shape = ((size[1] + cell - 1) // cell, (size[0] + cell - 1) // cell)
    if rng.random() < 0.5:
        pixels = gen.integers(0, 256, size=shape, dtype=np.uint8)
    else:  # gaussian around a random grey
        pixels = np.clip(gen.normal(rng.uniform(60, 200), rng.uniform(20, 80), shape), 0, 255).astype(
            np.uint8
        )
    image = Image.fromarray(pixels, "L")
    return image.resize(size, Image.Resampling.NEAREST) if cell > 1 else image


def _neg_crop(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A heavily cropped drawing: a window of 8-22 % of the sheet's width (a fragment, not a sheet)."""
    drawing, _ = render_image(rng.getrandbits(32), size=size)
    w = round(size[0] * rng.uniform(0.08, 0.22))
    h = round(w * rng.uniform(0.6, 1.6))
    x, y = rng.randint(0, size[0] - w), rng.randint(0, max(0, size[1] - h))
    return drawing.crop((x, y, x + w, y + h))


def _neg_scribble(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Handwriting-like strokes: wobbly polylines in lines across the page (unseen in training)."""
    image, draw, k, ink = _paper(size, rng)
    width = max(1, round(rng.uniform(0.3, 0.9) * k))
    y, line_h = rng.uniform(15, 40), rng.uniform(8, 16)
    while y < size[1] / k - 15:
        x = rng.uniform(10, 40)
        end = rng.uniform(200, SHEET_UNITS - 10)
        points = []
        while x < end:
            points.append((x * k, (y + rng.uniform(-0.4, 0.4) * line_h) * k))
            x += rng.uniform(0.8, 3.0)
            if rng.random() < 0.08 and len(points) > 1:  # word gap
                draw.line(points, fill=ink, width=width, joint="curve")
                points, x = [], x + rng.uniform(3, 8)
        if len(points) > 1:
            draw.line(points, fill=ink, width=width, joint="curve")
        y += line_h * rng.uniform(1.2, 2.0)
    return _scan(image, rng)


def _neg_graph_paper(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Squared paper: fine grid, bolder every fifth line, a few plotted points (unseen in training)."""
    image, draw, k, ink = _paper(size, rng)
    step = rng.uniform(2, 6)
    faint = rng.randint(120, 200)
    for i in range(int(SHEET_UNITS / step) + 1):
        colour, width = (ink, max(1, round(0.3 * k))) if i % 5 == 0 else (faint, 1)
        draw.line((i * step * k, 0, i * step * k, size[1]), fill=colour, width=width)
    for j in range(int(size[1] / k / step) + 1):
        colour, width = (ink, max(1, round(0.3 * k))) if j % 5 == 0 else (faint, 1)
        draw.line((0, j * step * k, size[0], j * step * k), fill=colour, width=width)
    for _ in range(rng.randint(0, 12)):
        x, y, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), k
        draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    return _scan(image, rng)


def _neg_chart(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A line or bar chart with axes, ticks, labels and a caption (unseen in training)."""
    image, draw, k, ink = _paper(size, rng)
    h_u = size[1] / k
    x0, y0, x1, y1 = (
        rng.uniform(30, 60),
        rng.uniform(20, 40),
        rng.uniform(300, 400),
        h_u - rng.uniform(30, 60),
    )
    width, font = max(1, round(0.4 * k)), _font(k, 4.0)
    draw.line((x0 * k, y0 * k, x0 * k, y1 * k, x1 * k, y1 * k), fill=ink, width=width)
    ticks = rng.randint(4, 10)
    for t in range(ticks + 1):
        tx = x0 + (x1 - x0) * t / ticks
        draw.line((tx * k, y1 * k, tx * k, (y1 + 2) * k), fill=ink, width=width)
        draw.text((tx * k, (y1 + 6) * k), str(t * rng.choice((1, 5, 10))), fill=ink, font=font, anchor="mm")
    bars = rng.random() < 0.4
    for _ in range(rng.randint(1, 3) if not bars else 1):
        values = np.cumsum(np.random.default_rng(rng.getrandbits(64)).normal(0, 1, ticks + 1))
        values = (values - values.min()) / (np.ptp(values) or 1.0)
        pts = [
            ((x0 + (x1 - x0) * t / ticks) * k, (y1 - (y1 - y0) * (0.1 + 0.8 * v)) * k)
            for t, v in enumerate(values)
        ]
        if bars:
            bw = (x1 - x0) / ticks * 0.3 * k
            for px, py in pts[1:]:
                draw.rectangle((px - bw, py, px + bw, y1 * k), outline=ink, fill=rng.randint(80, 220))
        else:
            draw.line(pts, fill=ink, width=width)
    draw.text((x0 * k, (y0 - 8) * k), _words(rng, 4).upper(), fill=ink, font=_font(k, 5.0))
    return _scan(image, rng)


def _neg_barcode(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """One to four barcodes of random bar widths with digits below (unseen in training)."""
    image, draw, k, ink = _paper(size, rng)
    for _ in range(rng.randint(1, 4)):
        x, y = rng.uniform(10, 250), rng.uniform(10, size[1] / k - 60)
        height, unit = rng.uniform(15, 50), rng.uniform(0.3, 1.0)
        for _ in range(rng.randint(30, 70)):
            bar = unit * rng.randint(1, 4)
            if rng.random() < 0.5:
                draw.rectangle((x * k, y * k, (x + bar) * k, (y + height) * k), fill=ink)
            x += bar
        draw.text(
            (x * k, (y + height + 4) * k), str(rng.randint(10**11, 10**12)), fill=ink, font=_font(k, 4.0)
        )
    return _scan(image, rng)


_NEGATIVES: Final[dict[str, Callable[[tuple[int, int], random.Random], Image.Image]]] = {
    "blank": _neg_blank,
    "text": _neg_text,
    "table": _neg_table,
    "title_block": _neg_title_block,
    "photo": _neg_photo,
    "noise": _neg_noise,
    "crop": _neg_crop,
    "scribble": _neg_scribble,
    "graph_paper": _neg_graph_paper,
    "chart": _neg_chart,
    "barcode": _neg_barcode,
}
assert tuple(_NEGATIVES) == ALL_NEGATIVE_KINDS


def render_negative_image(
    seed: int, kind: str | None = None, *, size: tuple[int, int] = DEFAULT_SIZE
) -> tuple[Image.Image, str]:
    """Render one non-drawing (mode ``L``, or ``RGB`` for ``photo``) and return it with its kind."""
    rng = random.Random(seed ^ 0x5EED_0F_AB)  # not the drawing of the same seed
    label = kind if kind is not None else rng.choice(NEGATIVE_KINDS)
    if label not in _NEGATIVES:
        raise ValueError(f"unknown negative kind {label!r}; expected one of {ALL_NEGATIVE_KINDS}")
    return _NEGATIVES[label](size, rng), label


def render_negative(
    seed: int, kind: str | None = None, *, size: tuple[int, int] = DEFAULT_SIZE, fmt: Format = "png"
) -> tuple[bytes, str]:
    """Render one non-drawing and encode it; returns ``(bytes, kind)``. Same seed, same bytes."""
    image, label = render_negative_image(seed, kind, size=size)
    return encode(image, fmt, quality=70 + seed % 26), label


def negative_kinds(count: int, *, kinds: tuple[str, ...] = ALL_NEGATIVE_KINDS) -> list[str]:
    """The kind of each item of ``negative_dataset(count, kinds=kinds)``: balanced, cycling through kinds."""
    return [kinds[i % len(kinds)] for i in range(count)]


def negative_dataset(
    count: int,
    *,
    seed: int = 0,
    kinds: tuple[str, ...] = ALL_NEGATIVE_KINDS,
    size: tuple[int, int] = DEFAULT_SIZE,
    fmt: Format | Literal["mixed"] = "png",
) -> Iterator[tuple[bytes, str]]:
    """A balanced, deterministic set of ``count`` encoded non-drawings (``mixed``: every third is JPEG)."""
    for i, kind in enumerate(negative_kinds(count, kinds=kinds)):
        item_fmt: Format = ("jpeg" if i % 3 == 2 else "png") if fmt == "mixed" else fmt
        yield render_negative(dataset_seed(i, seed=seed), kind, size=size, fmt=item_fmt)


def issue_inputs(size: tuple[int, int] = DEFAULT_SIZE) -> dict[str, bytes]:
    """The four inputs of issue 23 as PNG bytes: blank A4, uniform noise, typed text, a photo-like image.

    The closed-set model answered them ``bracket`` 0.87, ``bracket`` 0.63, ``bracket`` 0.98 and
    ``flange`` 1.00; the abstaining model must answer ``not_a_drawing`` or ``unsure``.
    """
    gen = np.random.default_rng(23)
    noise = Image.fromarray(gen.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8), "L")
    text, _ = render_negative_image(23, "text", size=size)
    photo, _ = render_negative_image(23, "photo", size=size)
    return {
        "blank_a4": encode(Image.new("L", size, 255)),
        "uniform_noise": encode(noise),
        "typed_text": encode(text),
        "photo_like": encode(photo),
    }


# --- annotation symbols on drawings (issue 16: the symbol recognition package) -------------------------
#: The annotation symbols the generator draws, in the symbol model's output order.
SYMBOL_NAMES: Final[tuple[str, ...]] = (
    "surface_finish",
    "welding",
    "tolerance_frame",
    "section_arrow",
    "datum",
    "balloon",
)
#: Dataset bases of the symbol model (``symbol_dataset(seed=...)``), disjoint from the drawing model's.
SYMBOL_TRAIN_SEED: Final = 11
SYMBOL_CALIBRATION_SEED: Final = 12
SYMBOL_HELDOUT_SEED: Final = 13
#: Probability that a drawing carries each symbol (independently), so every subset occurs.
SYMBOL_PRESENT_P: Final = 0.5
#: A symbol's unit (about its height) in sheet units: 12-20 mm, as drawn at 5-7 mm text height on A3.
SYMBOL_SCALE_UNITS: Final = (12.0, 20.0)

_SymbolShape = tuple[tuple[float, float, float, float], Callable[["_Canvas", random.Random, float], None]]


def _filled(canvas: _Canvas, *points: Point) -> None:
    canvas.draw.polygon([canvas.px(p) for p in points], fill=canvas.ink)


def _label(canvas: _Canvas, at: Point, value: str) -> None:
    canvas.text(canvas.px(at), value, "symbol")


def _sym_surface_finish(canvas: _Canvas, rng: random.Random, _: float) -> None:
    """The check mark (ISO 1302): short left leg, long right leg, optional bar and Ra value."""
    legs = (Line((-0.3, 0.0), (0.0, 0.5), "thin"), Line((0.0, 0.5), (0.5, -0.5), "thin"))
    for item in legs:
        canvas.render(item)
    if rng.random() < 0.6:  # material removal required
        canvas.render(Line((-0.3, 0.0), (0.25, 0.0), "thin"))
    if rng.random() < 0.7:
        canvas.render(Line((0.5, -0.5), (1.3, -0.5), "thin"))
        _label(canvas, (0.9, -0.78), f"Ra {rng.choice(('0.8', '1.6', '3.2', '6.3', '12.5'))}")


def _sym_welding(canvas: _Canvas, rng: random.Random, _: float) -> None:
    """ISO 2553: arrow line to the joint, reference line, a weld symbol on it, the tail fork."""
    canvas.render(Line((-1.2, 0.0), (1.2, 0.0), "thin"))
    canvas.render(Line((-1.2, 0.0), (-1.9, 0.8), "thin"))
    canvas.arrow(canvas.px((-1.9, 0.8)), canvas.px((-1.2, 0.0)))
    side = rng.choice((1.0, -1.0))
    kind = rng.randrange(3)
    if kind == 0:  # fillet
        canvas.render(Poly(((-0.2, 0.0), (0.2, 0.0), (-0.2, 0.4 * side)), "thin"))
    elif kind == 1:  # V butt
        canvas.render(Line((-0.25, 0.4 * side), (0.0, 0.0), "thin"))
        canvas.render(Line((0.25, 0.4 * side), (0.0, 0.0), "thin"))
    else:  # square butt
        canvas.render(Line((-0.1, 0.0), (-0.1, 0.35 * side), "thin"))
        canvas.render(Line((0.1, 0.0), (0.1, 0.35 * side), "thin"))
    if rng.random() < 0.7:
        canvas.render(Line((1.2, 0.0), (1.5, -0.3), "thin"))
        canvas.render(Line((1.2, 0.0), (1.5, 0.3), "thin"))
    if rng.random() < 0.3:  # weld all round
        canvas.render(Circle((-1.2, 0.0), 0.12, "thin"))


def _sym_tolerance_frame(canvas: _Canvas, rng: random.Random, _: float) -> None:
    """A feature control frame (ISO 1101): characteristic, tolerance value, datum letter(s)."""
    cells = rng.choice((2, 3, 3, 4))
    edges = (0.0, 0.8, 2.2, 2.9, 3.6)[: cells + 1]  # characteristic, value, then one cell per datum
    right = edges[-1]
    canvas.render(Poly(((0.0, 0.0), (right, 0.0), (right, 0.8), (0.0, 0.8)), "thin"))
    for x in edges[1:-1]:
        canvas.render(Line((x, 0.0), (x, 0.8), "thin"))
    kind = rng.randrange(5)
    if kind == 0:  # position
        canvas.render(Circle((0.4, 0.4), 0.22, "thin"))
        canvas.render(Line((0.1, 0.4), (0.7, 0.4), "thin"))
        canvas.render(Line((0.4, 0.1), (0.4, 0.7), "thin"))
    elif kind == 1:  # flatness
        canvas.render(Poly(((0.2, 0.55), (0.55, 0.55), (0.65, 0.25), (0.3, 0.25)), "thin"))
    elif kind == 2:  # parallelism
        canvas.render(Line((0.2, 0.65), (0.45, 0.15), "thin"))
        canvas.render(Line((0.38, 0.65), (0.63, 0.15), "thin"))
    elif kind == 3:  # perpendicularity
        canvas.render(Line((0.15, 0.65), (0.65, 0.65), "thin"))
        canvas.render(Line((0.4, 0.65), (0.4, 0.15), "thin"))
    else:  # circularity
        canvas.render(Circle((0.4, 0.4), 0.25, "thin"))
    _label(canvas, (1.5, 0.4), f"{rng.choice(('0.01', '0.02', '0.05', '0.1', '0.2'))}")
    for i, x in enumerate(edges[2:-1]):
        _label(canvas, (x + 0.35, 0.4), "AB"[i])


def _sym_section_arrow(canvas: _Canvas, rng: random.Random, _: float) -> None:
    """A cutting-plane pair (ISO 128-40): thick end strokes, arrows in the viewing direction, letters."""
    letter = rng.choice("ABCDEF")
    gap = rng.uniform(2.5, 6.0)
    for y in (0.0, gap):
        canvas.render(Line((0.0, y - 0.6), (0.0, y + 0.6), "outline"))
        canvas.render(Line((0.0, y), (0.8, y), "thin"))
        _filled(canvas, (1.2, y), (0.75, y - 0.2), (0.75, y + 0.2))
        _label(canvas, (1.0, y - 0.6 if y == 0.0 else y + 0.6), letter)
    if rng.random() < 0.5:  # the cutting plane's chain line between the pair
        canvas.render(Line((0.0, 0.6), (0.0, gap - 0.6), "center"))


def _sym_datum(canvas: _Canvas, rng: random.Random, _: float) -> None:
    """A datum feature indicator: letter in a square, leader, filled triangle on the feature."""
    canvas.render(Poly(((0.0, 0.0), (0.8, 0.0), (0.8, 0.8), (0.0, 0.8)), "thin"))
    _label(canvas, (0.4, 0.4), rng.choice("ABCD"))
    leader = rng.uniform(0.5, 1.0)
    canvas.render(Line((0.4, 0.8), (0.4, 0.8 + leader), "thin"))
    _filled(canvas, (0.4, 0.8 + leader), (0.1, 1.15 + leader), (0.7, 1.15 + leader))


def _sym_balloon(canvas: _Canvas, rng: random.Random, _: float) -> None:
    """An item balloon: a circle with the item number and a leader ending in a dot."""
    canvas.render(Circle((0.0, 0.0), 0.45, "thin"))
    _label(canvas, (0.0, 0.0), str(rng.randint(1, 24)))
    end = (rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.4))
    canvas.render(Line((0.32, 0.32), end, "thin"))
    canvas.circle(end, 0.07, "outline")


#: Each symbol's extent in its own units (x0, y0, x1, y1, before rotation) and its painter.
_SYMBOLS: Final[dict[str, _SymbolShape]] = {
    "surface_finish": ((-0.4, -1.0, 1.4, 0.6), _sym_surface_finish),
    "welding": ((-2.0, -0.5, 1.6, 0.9), _sym_welding),
    "tolerance_frame": ((0.0, 0.0, 3.6, 0.8), _sym_tolerance_frame),
    "section_arrow": ((-0.2, -1.0, 1.3, 7.0), _sym_section_arrow),
    "datum": ((0.0, 0.0, 0.8, 2.2), _sym_datum),
    "balloon": ((-0.5, -0.5, 1.7, 1.5), _sym_balloon),
}
assert tuple(_SYMBOLS) == SYMBOL_NAMES


def _symbol_box(
    extent: tuple[float, float, float, float], origin: Point, scale_px: float, turns: int
) -> tuple[float, float, float, float]:
    corners = [(extent[0], extent[1]), (extent[2], extent[3])]
    if turns:  # the canvas turns (x, y) -> (-y, x)
        corners = [(-y, x) for x, y in corners]
    xs = sorted(origin[0] + x * scale_px for x, _ in corners)
    ys = sorted(origin[1] + y * scale_px for _, y in corners)
    return xs[0], ys[0], xs[1], ys[1]


def _place_symbols(sheet: _Sheet, names: tuple[str, ...], rng: random.Random) -> None:
    """Draw 1-3 instances of each named symbol at free spots of the drawing area (0 or 90 degrees)."""
    canvas = _Canvas(sheet.canvas.draw, sheet.canvas.k, rng, sheet.canvas.font)
    canvas.ink = sheet.canvas.ink
    ax0, ay0, ax1, ay1 = sheet.area_px
    taken: list[tuple[float, float, float, float]] = []
    for name in names:
        extent, paint = _SYMBOLS[name]
        for instance in range(rng.randint(1, 3)):
            scale = rng.uniform(*SYMBOL_SCALE_UNITS)
            turns = rng.choice((0, 1))
            scale_px = scale * canvas.k
            for attempt in range(30):
                origin = (rng.uniform(ax0, ax1), rng.uniform(ay0, ay1))
                box = _symbol_box(extent, origin, scale_px, turns)
                inside = box[0] >= ax0 and box[1] >= ay0 and box[2] <= ax1 and box[3] <= ay1
                free = not any(
                    box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken
                )
                # The first instance is always drawn (the label says present); extra ones only if room.
                if inside and (free or (instance == 0 and attempt == 29)):
                    break
            else:
                continue
            taken.append(box)
            canvas.place(origin, scale, turns)
            canvas.font = _font(canvas.k, 0.3 * scale)
            paint(canvas, rng, scale)


def render_symbol_image(
    seed: int, symbols: tuple[str, ...] | None = None, *, size: tuple[int, int] = DEFAULT_SIZE
) -> tuple[Image.Image, tuple[str, ...]]:
    """The drawing of ``seed`` with annotation symbols drawn before the scan; returns the symbols drawn.

    Without ``symbols`` each of ``SYMBOL_NAMES`` is present with ``SYMBOL_PRESENT_P``, independently.
    The symbols come from their own generator (the base drawing and its scan are those of
    ``render_image(seed)``), at 12-20 mm, 0 or 90 degrees, one to three instances each.
    """
    sym_rng = random.Random(seed ^ 0x5B_01_5EED)
    if symbols is None:
        symbols = tuple(n for n in SYMBOL_NAMES if sym_rng.random() < SYMBOL_PRESENT_P)
    unknown = [n for n in symbols if n not in _SYMBOLS]
    if unknown:
        raise ValueError(f"unknown symbols {unknown}; expected some of {SYMBOL_NAMES}")
    ordered = tuple(n for n in SYMBOL_NAMES if n in symbols)
    sheet = _unscanned(seed, None, size)
    _place_symbols(sheet, ordered, sym_rng)
    return _scan(sheet.image, sheet.rng), ordered


def render_symbol_drawing(
    seed: int,
    symbols: tuple[str, ...] | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    fmt: Format = "png",
) -> tuple[bytes, tuple[str, ...]]:
    """``render_symbol_image`` encoded; returns ``(bytes, symbols present)``. Same seed, same bytes."""
    image, present = render_symbol_image(seed, symbols, size=size)
    return encode(image, fmt, quality=70 + seed % 26), present


def symbol_dataset(
    count: int,
    *,
    seed: int = SYMBOL_TRAIN_SEED,
    size: tuple[int, int] = DEFAULT_SIZE,
    fmt: Format | Literal["mixed"] = "png",
) -> Iterator[tuple[bytes, tuple[str, ...]]]:
    """``count`` deterministic drawings with random symbol subsets (``mixed``: every third is JPEG)."""
    for i in range(count):
        item_fmt: Format = ("jpeg" if i % 3 == 2 else "png") if fmt == "mixed" else fmt
        yield render_symbol_drawing(dataset_seed(i, seed=seed), size=size, fmt=item_fmt)
