"""The genome file: JSON data (FORMAT, VERSION, the nodes with their operands) written by
Genome.to_dict and read here. Only data is read: node names must be known inputs and primitives
(the Genome checks them), so loading never runs code."""

from __future__ import annotations

import json
import reprlib
from pathlib import Path

import networkx as nx

from ..errors import EvoproxyError
from .graph import ROLES

FORMAT = "evoproxy-genome"
VERSION = 1
# A genome within graph.MAX_TERMS takes under 64 KB of JSON; the bound refuses a file before it is
# read, and caps the graph built before its size is checked.
MAX_JSON_BYTES = 256 * 1024


def graph_from_dict(data: dict) -> tuple[nx.DiGraph, str | None, str | None, int | None]:
    """The graph, space, name and perturb_around of the genome stored by `Genome.to_dict`."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EvoproxyError(f"not an evoproxy genome: expected a JSON object with format {FORMAT!r}")
    if data.get("version") != VERSION:
        raise EvoproxyError(f"unsupported genome version {data.get('version')!r} (this evoproxy reads {VERSION})")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise EvoproxyError("a genome needs a non-empty 'nodes' list")
    graph = nx.DiGraph()
    for node in nodes:
        if not (
            isinstance(node, dict)
            and isinstance(node.get("id"), int)
            and node.get("role") in ROLES
            and isinstance(node.get("name"), str)
            and isinstance(node.get("operands", []), list)
        ):
            raise EvoproxyError(
                f"bad genome node {reprlib.repr(node)}: needs int 'id', 'role' in {ROLES}, 'name', 'operands'"
            )
        if node["id"] in graph:
            raise EvoproxyError(f"genome node id {node['id']} appears twice")
        graph.add_node(node["id"], role=node["role"], name=node["name"])
    for node in nodes:
        ops = node.get("operands", [])
        if not all(isinstance(o, int) and o in graph for o in ops) or len(set(ops)) != len(ops):
            raise EvoproxyError(f"genome node {node['id']}: operands must be distinct ids of other nodes")
        for arg, operand in enumerate(ops):
            graph.add_edge(operand, node["id"], arg=arg)
    space, name, around = data.get("space"), data.get("name"), data.get("perturb_around")
    if around is not None and (isinstance(around, bool) or around not in range(2, 9)):
        raise EvoproxyError(f"genome perturb_around {reprlib.repr(around)}: a bit-width from 2 to 8, or left out")
    return graph, space if isinstance(space, str) else None, name if isinstance(name, str) else None, around


def parse_json(text: str) -> dict:
    """`Genome.to_json` output parsed (json.loads only), of at most MAX_JSON_BYTES."""
    if len(text) > MAX_JSON_BYTES:
        raise EvoproxyError(f"genome JSON of {len(text)} characters, over the bound of {MAX_JSON_BYTES}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvoproxyError(f"genome is not valid JSON: {exc}") from None
    except RecursionError:
        raise EvoproxyError("genome JSON is nested too deeply to be a genome") from None
    return data


def read_text(path: str | Path) -> str:
    """The text of a genome JSON file (UTF-8, at most MAX_JSON_BYTES)."""
    path = Path(path)
    if not path.is_file():
        raise EvoproxyError(f"genome file {path} does not exist")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise EvoproxyError(f"cannot read genome file {path}: {exc.strerror}") from None
    if len(data) > MAX_JSON_BYTES:
        raise EvoproxyError(f"genome file {path} is over the bound of {MAX_JSON_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EvoproxyError(f"genome file {path} is not UTF-8 text") from None
