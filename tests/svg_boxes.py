"""Approximate text boxes of a rendered diagram, to check that labels neither overlap nor clip.

Widths come from Helvetica's metrics (the diagrams ask for ``Helvetica,Arial,sans-serif``;
Arial and Liberation Sans share them), in 1/1000 em; bold text is taken 8 % wider. Exact
enough to catch a label drawn over another, not a pixel-perfect renderer.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

SVG = "{http://www.w3.org/2000/svg}"
_ASCII = (
    " 278 ! 278 \" 355 # 556 $ 556 % 889 & 667 ' 191 ( 333 ) 333 * 389 + 584 , 278 - 333 . 278"
    " / 278 : 278 ; 278 < 584 = 584 > 584 ? 556 @ 1015 A 667 B 667 C 722 D 722 E 667 F 611"
    " G 778 H 722 I 278 J 500 K 667 L 556 M 833 N 722 O 778 P 667 Q 778 R 722 S 667 T 611"
    " U 722 V 667 W 944 X 667 Y 667 Z 611 [ 278 \\ 278 ] 278 ^ 469 _ 556 ` 333 a 556 b 556"
    " c 500 d 556 e 556 f 278 g 556 h 556 i 222 j 222 k 500 l 222 m 833 n 556 o 556 p 556"
    " q 556 r 333 s 500 t 278 u 556 v 500 w 722 x 500 y 500 z 500 { 334 | 260 } 334 ~ 584"
)
WIDTHS: dict[str, int] = {" ": 278}
for _char, _width in re.findall(r"(\S) (\d+)", _ASCII):
    WIDTHS[_char] = int(_width)
WIDTHS.update({str(d): 556 for d in range(10)})
WIDTHS.update({"\u00d7": 584, "\u00b7": 278, "\u2007": 556, "\u2026": 1000})
#: Characters not in Helvetica (e.g. the artefact arrow) come from a fallback font: wide.
UNKNOWN = 1000
BOLD = 1.08


@dataclass(frozen=True)
class Box:
    """A text's box in viewBox coordinates."""

    text: str
    left: float
    top: float
    right: float
    bottom: float

    def overlaps(self, other: Box, slack: float = 0.5) -> bool:
        return (
            self.left + slack < other.right
            and other.left + slack < self.right
            and self.top + slack < other.bottom
            and other.top + slack < self.bottom
        )


def text_width(text: str, size: float, bold: bool = False) -> float:
    em = sum(WIDTHS.get(c, UNKNOWN) for c in text) / 1000
    return em * size * (BOLD if bold else 1.0)


def _translate(root: ET.Element) -> tuple[float, float, float]:
    graph = root.find(f"{SVG}g")
    transform = graph.get("transform", "") if graph is not None else ""
    scale = re.search(r"scale\(([-\d.]+)", transform)
    move = re.search(r"translate\(([-\d.]+)[ ,]+([-\d.]+)\)", transform)
    s = float(scale.group(1)) if scale else 1.0
    return s, float(move.group(1)) if move else 0.0, float(move.group(2)) if move else 0.0


BOLD_CLASSES = frozenset({"count", "errored-count", "times"})


def text_boxes(svg: str) -> tuple[list[Box], tuple[float, float, float, float]]:
    """Return the box of every non-blank ``<text>`` of ``svg`` and the viewBox."""
    root = ET.fromstring(svg)
    vb = tuple(float(v) for v in root.get("viewBox", "0 0 0 0").split())
    s, tx, ty = _translate(root)
    boxes: list[Box] = []
    for el in root.iter(f"{SVG}text"):
        size = float(el.get("font-size", "14"))
        parts: list[tuple[str, bool]] = [(el.text or "", False)]
        for span in el.iter(f"{SVG}tspan"):
            parts.append((span.text or "", span.get("class", "") in BOLD_CLASSES))
            parts.append((span.tail or "", False))
        content = "".join(p for p, _ in parts)
        # Trailing figure spaces are reserved room, drawn as nothing.
        if not content.strip(" \u2007"):
            continue
        width = sum(text_width(p, size, b) for p, b in parts)
        x, y = float(el.get("x", "0")), float(el.get("y", "0"))
        anchor = el.get("text-anchor", "start")
        left = {"middle": x - width / 2, "end": x - width}.get(anchor, x)
        boxes.append(
            Box(
                content,
                s * (left + tx),
                s * (y - 0.78 * size + ty),
                s * (left + width + tx),
                s * (y + 0.22 * size + ty),
            )
        )
    return boxes, (vb[0], vb[1], vb[0] + vb[2], vb[1] + vb[3])  # type: ignore[misc]


def problems(svg: str) -> list[str]:
    """Return every pair of overlapping text boxes and every box outside the viewBox."""
    boxes, (x0, y0, x1, y1) = text_boxes(svg)
    found = [
        f"{a.text!r} overlaps {b.text!r}"
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a.overlaps(b)
    ]
    found += [
        f"{b.text!r} outside the viewBox ({b.left:.1f},{b.top:.1f})-({b.right:.1f},{b.bottom:.1f})"
        for b in boxes
        if b.left < x0 - 0.5 or b.top < y0 - 0.5 or b.right > x1 + 0.5 or b.bottom > y1 + 0.5
    ]
    return found
