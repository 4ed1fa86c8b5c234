"""The preprocessing contract: how stored examples become model inputs, the same way in training, evaluation,
prediction and inside a package.

A kind of input (images, texts) implements :class:`Preprocessing` and registers its class in
:data:`PREPROCESSINGS` under its ``kind``; a package stores ``to_dict()`` and :func:`preprocessing_from_dict`
rebuilds it. The data layer registers the built-in kinds when ``slimship.data`` is imported.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from slimship.core.errors import PackageError
from slimship.core.registry import Registry


class Preprocessing(Protocol):
    kind: str

    def to_dict(self) -> dict: ...

    def describe(self) -> str:
        """A few words for logs ("resized to 64x64")."""

    def summary(self) -> dict:
        """Headline figures recorded with a run's data set ({"image_size": 64})."""

    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input, without the batch dimension ((3, 64, 64)): a package's graph must take
        exactly this."""

    def prepare(self, raw: Any) -> Any:
        """Examples as the data sources deliver them → stored rows (a torch batch) at the model's input size."""

    def model_input(self, batch: Any) -> Any:
        """Stored examples (a torch batch) → the model's float input (torch)."""

    def model_input_np(self, batch: Any) -> Any:
        """numpy twin of :meth:`model_input`, for runtimes."""

    def random_rows(self, n: int, rng: Any) -> Any:
        """``n`` random stored rows (numpy) drawn with ``rng``: inputs for checking that two graphs agree."""

    def augment(self, batch: Any, generator: Any, hflip: bool, shift: int) -> Any:
        """Training-time jitter of stored examples (kinds without augmentation return ``batch``)."""

    # Optional: ``examples`` ("images" when absent, "texts") says what raw examples ``prepare`` reads, so data of
    # the other kind is refused clearly; ``files()`` returns data files a package must carry beside ``to_dict()``
    # (``{"tokenizer.json": bytes}``), given back to ``from_dict(d, read_file)`` on load.


PREPROCESSINGS: Registry[type] = Registry("preprocessing kind")


def examples_of(pre: Any) -> str:
    """What ``pre`` reads: "images" (the default of preprocessings that do not say) or "texts"."""
    return getattr(pre, "examples", "images")


def rate_unit(pre: Any) -> str:
    """The throughput unit of training logs for what ``pre`` reads: "img/s", "texts/s"."""
    kind = examples_of(pre)
    return "img/s" if kind == "images" else f"{kind}/s"


def preprocessing_from_dict(d: Any, read_file: Callable[[str], bytes] | None = None) -> Preprocessing:
    """Rebuild a preprocessing from its ``to_dict()`` (a dict without ``kind`` is an image one: packages written
    before kinds existed); ``read_file(name)`` reads the data files it names (a package's parts: what ``files()``
    gave when it was packed). A kind's ``from_dict`` checks every value against that kind's bounds and raises
    ValueError (or KeyError, TypeError) naming the first bad one.

    Raises PackageError for a value that is not an object, an unknown kind, or a value the kind refuses."""
    if not isinstance(d, dict):
        raise PackageError(f"the preprocessing must be a JSON object, not {type(d).__name__}: re-create the package")
    kind = d.get("kind", "image")
    if not isinstance(kind, str) or kind not in PREPROCESSINGS:
        raise PackageError(f"unknown preprocessing kind {repr(kind)[:40]}: upgrade slimship to read this package")
    cls = PREPROCESSINGS.get(kind)
    try:
        return cls.from_dict(d) if read_file is None else cls.from_dict(d, read_file)
    except PackageError:
        raise
    except KeyError as e:
        raise PackageError(f"the {kind} preprocessing lacks {repr(e.args[0])[:40] if e.args else 'a field'}: "
                           "re-create the package with `slimship run`") from None
    except (TypeError, ValueError) as e:
        detail = " ".join(str(e).split())[:200]
        raise PackageError(f"the {kind} preprocessing is invalid ({detail}): re-create the package with "
                           "`slimship run`") from None


def preprocessing_files(pre: Preprocessing) -> dict[str, bytes]:
    """The data files ``pre`` needs beside its dict (a text model's tokenizer), by part name; most need none."""
    files = getattr(pre, "files", None)
    return dict(files()) if files is not None else {}
