"""pyproject.toml declares compatible ranges (jitwarm lives next to sglang); constraints.txt pins the
exact versions CI tests. Each pin must sit inside its range, and the range must start at it."""

import tomllib

from conftest import REPO
from packaging.requirements import Requirement


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {p.name.lower().replace("_", "-"): str(next(iter(p.specifier)).version) for p in pins}


def test_every_dependency_is_a_range_whose_floor_is_the_pinned_version_ci_tests():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = _pins()
    for req in requirements:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} has no pin in constraints.txt"
        assert not any(s.operator == "==" for s in req.specifier), f"{req}: an exact pin collides as sglang moves"
        assert req.specifier.contains(pins[name]), f"{req} excludes the pinned {pins[name]}"
        floors = [s.version for s in req.specifier if s.operator == ">="]
        assert floors == [pins[name]], f"{req}: its lower bound should be the tested {pins[name]}"
