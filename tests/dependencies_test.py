"""setup.cfg declares every package cnn imports, and its TensorFlow and Keras floors are what the tests run on."""

import ast
import configparser
import importlib.metadata
import re
import sys

import pytest

from conftest import REPO

# A floor is tested when the tests run on it: its major.minor is the installed one.
TESTED_FLOORS = ("tensorflow", "keras")


def declared() -> dict[str, str]:
  """Each distribution setup.cfg lists (install_requires and extras) → its version specifier."""
  options = configparser.ConfigParser()
  options.read(REPO / "setup.cfg")
  lines = options["options"]["install_requires"].splitlines()
  lines += [line for _, value in options["options.extras_require"].items() for line in value.splitlines()]
  requirements = {}
  for line in lines:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*(.*)", line.strip())
    if match and not line.strip().startswith("#"):
      requirements.setdefault(_normalized(match[1]), match[3])
  return requirements


def _normalized(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def imported_packages() -> set[str]:
  """The top-level third-party modules that cnn's code imports."""
  modules = set()
  for path in (REPO / "cnn").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        modules.update(alias.name.split(".")[0] for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        modules.add(node.module.split(".")[0])
  return {m for m in modules if m not in sys.stdlib_module_names and m != "cnn"}


def test_every_imported_package_is_declared():
  distributions = importlib.metadata.packages_distributions()
  undeclared = {module for module in imported_packages()
                if not any(_normalized(d) in declared() for d in distributions.get(module, [module]))}
  assert not undeclared, f"cnn imports {sorted(undeclared)}, which setup.cfg does not declare"


@pytest.mark.parametrize("name", TESTED_FLOORS)
def test_the_floor_is_the_version_the_tests_run_on(name):
  floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", declared()[name])
  assert floor, f"setup.cfg declares {name}{declared()[name]}: give it a floor, {name}>=MAJOR.MINOR"
  installed = importlib.metadata.version(name)
  assert tuple(map(int, installed.split(".")[:2])) == (int(floor[1]), int(floor[2])), (
      f"the tests run on {name} {installed} but setup.cfg's floor is {name}>={floor[1]}.{floor[2]}: raise the "
      "floor (and README's line), or run the tests on the floor too")
