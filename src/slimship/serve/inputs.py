"""What a predict request carries, per kind of model input: decoded, checked against the limits, turned into
model inputs the way ``slimship predict`` does.

The seam for other inputs: a kind registers an :class:`InputKind` in :data:`INPUT_KINDS` under the name of its
preprocessing kind (``Preprocessing.kind``, recorded in every package). Images are the built-in kind; a text kind
adds ``from_json`` for ``{"texts": [...]}`` (and ``from_files`` if files make sense) and the server needs no change.

Every problem with a request is a :class:`RequestError` carrying its HTTP status and a one-line message.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from slimship.core.errors import SlimshipError
from slimship.core.registry import Registry


class RequestError(SlimshipError):
    """A request the server refuses: ``status`` is the HTTP status (4xx), the message says what to send instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may carry. ``max_body_bytes`` is enforced on the raw body before it is parsed;
    ``max_image_pixels`` on each image's declared size before it is decoded (decompression bombs)."""

    max_body_bytes: int = 16 * 2**20
    max_inputs: int = 64
    max_image_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_inputs, self.max_image_pixels) < 1:
            raise ValueError(f"bad request limits {self}: every limit must be at least 1")


class InputKind(Protocol):
    """Turns a request's payload into examples (``raw``, one per input) and those into the model's input batch."""

    json_field: str  # the JSON key that carries the inputs ("images", "texts")

    def from_json(self, items: list, limits: Limits, pre: Any) -> list:
        """The decoded examples of the JSON list ``items``; RequestError on a bad item."""

    def from_files(self, files: list[tuple[str, bytes]], limits: Limits, pre: Any) -> list:
        """The decoded examples of uploaded files ``[(filename, bytes)]``; RequestError on a bad file."""

    def model_input(self, examples: list, pre: Any) -> np.ndarray:
        """Examples → the model's input batch [n, ...] (float32), exactly as ``slimship predict`` prepares it."""

    def example(self, pre: Any) -> list:
        """One made-up example, to warm the model up before the first request."""


INPUT_KINDS: Registry[InputKind] = Registry("served input kind")


class ImageInputs:
    """Images: multipart files, or ``{"images": [base64, ...]}`` (a ``data:image/...;base64,`` prefix is allowed).

    Each image is decoded like ``slimship predict`` decodes a file (Pillow, first frame, the package's channels
    with the same gray conversion), resized to the package's input size alone (so images of different sizes may
    share a request and a batch; resizing one image does not depend on the others) and normalised.
    """

    json_field = "images"

    def from_json(self, items: list, limits: Limits, pre: Any) -> list[np.ndarray]:
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise RequestError(400, f"images[{i}] is a {type(item).__name__}: send each image as a base64 string")
            out.append(_row(decode_image(_b64(item, i), pre.channels, limits, f"images[{i}]"), pre))
        return out

    def from_files(self, files: list[tuple[str, bytes]], limits: Limits, pre: Any) -> list[np.ndarray]:
        return [_row(decode_image(data, pre.channels, limits, f"file {name!r}"), pre) for name, data in files]

    def model_input(self, examples: list[np.ndarray], pre: Any) -> np.ndarray:
        return pre.model_input_np(np.concatenate(examples))

    def example(self, pre: Any) -> list[np.ndarray]:
        return [_row(np.zeros((pre.image_size + 1, pre.image_size + 1, pre.channels), np.uint8), pre)]  # resized


INPUT_KINDS.add("image", ImageInputs(), help="images: multipart files or base64 strings in JSON")


def _row(image: np.ndarray, pre: Any) -> np.ndarray:
    """One decoded image brought to the package's input size at once (uint8 [1, C, S, S]), so a request holds at
    most one full-size image at a time, however many it sends."""
    return pre.prepare(image[None]).numpy()


def decode_image(data: bytes, channels: int, limits: Limits, label: str) -> np.ndarray:
    """uint8 [H, W, channels] of encoded image ``data``; RequestError (413) when its declared size is over the
    limit, checked on the header before any pixel is decoded, (400) when it is not a readable image."""
    import warnings

    from PIL import Image

    from slimship.core.errors import DataError
    from slimship.data.folder import _decode  # the decoder `slimship predict` uses: same modes, same gray formula

    with warnings.catch_warnings():
        # Pillow warns from ~89 M pixels and refuses from twice that; this server's own limit is checked below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                width, height = im.size
        except Image.DecompressionBombError:
            raise RequestError(413, f"{label} declares too many pixels: send images of at most "
                                    f"{limits.max_image_pixels:,} pixels") from None
        except Exception as e:  # Pillow raises many types for data it cannot identify
            raise RequestError(400, f"{label} is not a readable image ({type(e).__name__}): send PNG, JPEG, BMP, "
                                    "GIF, WebP or TIFF bytes") from None
        if width * height > limits.max_image_pixels:
            raise RequestError(413, f"{label} is {width}x{height} = {width * height:,} pixels, over this server's "
                                    f"limit of {limits.max_image_pixels:,}: send a smaller image")
        try:
            return np.require(_decode(io.BytesIO(data), channels), requirements=["C", "W"])  # torch wants it writable
        except DataError:
            raise RequestError(400, f"{label} cannot be decoded (truncated or corrupt): send the whole image") from None


def _b64(text: str, i: int) -> bytes:
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise RequestError(400, f"images[{i}] is a data URL without ';base64,': send base64-encoded bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"images[{i}] is not valid base64: encode the image file's bytes with base64") from None
