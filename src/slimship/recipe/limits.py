"""Reading a recipe file within bounds: its size, its encoding, YAML alias expansion, list lengths, nesting, and
the length of the error message that reports a mistake.

A YAML file can be small and still ask for a lot: nine nested anchors of ten aliases each ("billion laughs") are a
few hundred bytes that stand for 10⁹ values. PyYAML builds such a document as a graph whose aliases share their
nodes, so building it is cheap; what hangs is whatever then walks it as a tree (validation, error messages). So the
composed node graph is measured as the tree it stands for, without expanding it, and refused beyond
:data:`MAX_NODES` before anything walks it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slimship.core.errors import RecipeError

#: Largest recipe file read (the commented template is about 5 KB).
MAX_RECIPE_BYTES = 256 * 1024
#: Most values a recipe may stand for, with every alias counted each time it is used (the template has ~250).
MAX_NODES = 20_000
#: Longest list in a recipe (candidates, steps, batch sizes, ...).
MAX_LIST = 1_000
#: Deepest nesting of mappings and lists.
MAX_DEPTH = 40
#: Longest error message (characters) a recipe mistake produces; longer ones are cut, saying how much was left out.
MAX_MESSAGE = 600
#: Longest rendering of a rejected value inside an error message.
MAX_VALUE = 60


def read_recipe_text(p: Path) -> str:
    """The recipe's text: at most MAX_RECIPE_BYTES, UTF-8 (a BOM is allowed). Raises RecipeError."""
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise RecipeError(f"recipe {p} cannot be read ({e.strerror or e}): check the path and permissions") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"recipe {p} is larger than {MAX_RECIPE_BYTES // 1024} KiB: a recipe is a short YAML file; "
                          f"check that this is the right file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RecipeError(f"recipe {p} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): save it as "
                          f"UTF-8") from None


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with the safe loader, refusing documents that stand for too much.

    Raises RecipeError for invalid YAML, self-referring anchors, and documents over MAX_NODES values (aliases
    expanded), lists over MAX_LIST items or nesting deeper than MAX_DEPTH.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_nodes(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = cut(str(getattr(e, "problem", None) or e).replace("\n", " "), 200)
        raise RecipeError(f"{where} is not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{where} is nested too deeply: a recipe nests a few levels") from None
    finally:
        loader.dispose()


def check_nodes(root, where: str) -> None:
    """Measure the composed YAML graph as the tree it stands for (iteratively, each shared node once)."""
    import yaml

    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values it stands for, depth)
    entered: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        kids = _children(node, yaml)
        if finished:
            entered.discard(key)
            size = 1 + sum(done[id(k)][0] for k in kids)
            depth = 1 + max((done[id(k)][1] for k in kids), default=0)
            if size > MAX_NODES:
                raise RecipeError(f"{where} stands for more than {MAX_NODES:,} values once its aliases (*name) are "
                                  f"expanded: a recipe is short; write it out without nested aliases")
            if depth > MAX_DEPTH:
                raise RecipeError(f"{where} nests deeper than {MAX_DEPTH} levels: a recipe nests a few levels")
            done[key] = (size, depth)
            continue
        if key in done:
            continue
        if key in entered:
            raise RecipeError(f"{where} has an anchor that contains an alias to itself (&name ... *name): a recipe "
                              f"cannot refer to itself; write the value out")
        if isinstance(node, yaml.SequenceNode) and len(node.value) > MAX_LIST:
            raise RecipeError(f"{where} has a list of {len(node.value):,} items at line {node.start_mark.line + 1}; "
                              f"lists in a recipe hold at most {MAX_LIST:,}")
        entered.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in done)


def _children(node, yaml) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def non_finite_number(data: Any) -> str | None:
    """The dotted path of the first infinite or NaN number in parsed recipe data, or None.

    Iterative, each container visited once (data from Python may share or contain itself)."""
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path or "(top level)"
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in items)
    return None


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, at most ``limit`` characters: a cut in the middle keeps what went wrong and what to
    do, and says how many characters were left out."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head, tail = max(limit - 40, 20) * 3 // 5, max(limit - 40, 20) * 2 // 5
    return f"{text[:head]} …({len(text) - head - tail:,} characters left out)… {text[-tail:]}"


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to MAX_VALUE characters (without rendering a huge value whole first)."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 8:
        kind = type(value).__name__
        return f"<{kind} of {len(value):,} items>"
    text = repr(value)
    return text if len(text) <= MAX_VALUE else f"{text[:MAX_VALUE - 1]}…"
