"""Decoding a photo for a model that sees it small: JPEG draft mode.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size for a fraction of the work (the scaling happens
inside the inverse DCT; Pillow's ``Image.draft``). When a model resizes the photo's shortest side to
``shortest_side`` pixels anyway (224 for CLIP, 256 for EfficientNet-Lite0), decoding a 4000 x 3000
photo in full is wasted work. :func:`draft_request` asks for the largest reduction that keeps the
shortest side at least :data:`DRAFT_MARGIN` (1.5) times ``shortest_side``, so the model's own
resampling filter still does the final downscale from at least 1.5 times the target: the pixels the model
sees stay within a grey level or two of a full decode on average (``tests/test_data_decode.py`` holds it to
mean |diff| <= 2 of 255 and the embedding to cosine >= 0.999), while decoding a 12 MP photo is
several times faster. Other formats, and JPEGs already small enough, decode in full. A drafted
image remembers its full size (``Image.info["geoscope_full_size"]``) so that
``ImageTransform.to_uint8`` resizes it to exactly the dimensions a full decode would get: the scaled
decode rounds its size up to whole 8x8 blocks, and without this the crop could move by a pixel.
"""

from __future__ import annotations

import math

from PIL import Image

from geoscope.data.images import ImageSource, load_image

#: the decoded shortest side is kept at least this many times the model's shortest side. 1.5 rather than 2:
#: on a 3000 x 2001 JPEG for EfficientNet-Lite0 (256) it decodes at 1/4 instead of 1/2, 23 instead of 35 ms
#: of CPU (full decode 79 ms), with the model's pixels 1.1 grey levels from a full decode on average
#: (0.4 at margin 2; tests/test_data_decode.py allows 2)
DRAFT_MARGIN = 1.5
DRAFT_FORMATS = ("JPEG", "MPO")
#: ``Image.info`` key holding the (width, height) a drafted image has at full scale
FULL_SIZE_KEY = "geoscope_full_size"


def draft_request(size: tuple[int, int], shortest_side: int) -> tuple[int, int] | None:
    """The size to pass to ``Image.draft`` for an image of ``size`` seen at ``shortest_side`` pixels
    (None: no reduction is possible without going under the margin)."""
    w, h = size
    need = math.ceil(int(shortest_side) * DRAFT_MARGIN)
    if min(w, h) < 2 * need:  # the smallest reduction (1/2) would already go under the margin
        return None
    f = need / min(w, h)
    return max(1, math.ceil(w * f)), max(1, math.ceil(h * f))


def apply_draft(im: Image.Image, shortest_side: int | None) -> None:
    """Put a just-opened (not yet loaded) JPEG into draft mode for a model seeing ``shortest_side`` px."""
    if shortest_side and im.format in DRAFT_FORMATS:
        request = draft_request(im.size, shortest_side)
        if request is not None:
            full = im.size
            im.draft("RGB", request)
            if im.size != full:  # the resize then keeps the full image's proportions (no half-pixel shift)
                im.info[FULL_SIZE_KEY] = full


def load_image_for(src: ImageSource, shortest_side: int, **kwargs) -> Image.Image:
    """``data.images.load_image`` for a model that resizes the shortest side to ``shortest_side``:
    large JPEGs are decoded at a reduced scale (see the module docstring)."""
    return load_image(src, draft_size=int(shortest_side), **kwargs)
