"""Declarative search spaces: one TOML file per space in this folder.

A space names its allowed inputs, operations ("all" or a list), aggregations, the shape of its
graphs (input count, intermediate nodes, chain lengths) and OSP weight overrides; see
branched.toml for the annotated format. Adding a space means adding one file here. The files
are read by evoproxy.proxy.load_space.
"""

from importlib import resources
from pathlib import Path


def space_files() -> dict[str, Path]:
    """Name → path of every search space shipped in this package."""
    folder = resources.files(__name__)
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".toml")}
