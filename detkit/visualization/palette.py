"""Class colours: the dataset's palette, or a fixed generated one."""
import colorsys
from typing import List, Sequence, Tuple


def get_palette(num_classes: int,
                palette: Sequence = None) -> List[Tuple[int, int, int]]:
    """``num_classes`` RGB colours.

    Uses ``palette`` (e.g. ``dataset_meta['palette']``) when it has enough
    entries; otherwise evenly spaced, deterministic hues so that the same
    class always gets the same colour.
    """
    if palette is not None and len(palette) >= num_classes:
        return [tuple(int(c) for c in color) for color in palette]
    colors = []
    for i in range(num_classes):
        # Golden-ratio hue steps keep neighbouring classes distinguishable.
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors
