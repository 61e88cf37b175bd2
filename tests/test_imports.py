"""``import fusionnet`` loads the eager library only; the engine loads on first use.

Each check runs in a fresh interpreter, since this test process has loaded everything.
"""
from __future__ import annotations

import os
import subprocess
import sys

import fusionnet

#: Never loaded by ``import fusionnet`` nor by eager tensor, nn and optim work.
ENGINE = ("networkx", "numba", "scipy", "fusionnet.tracer", "fusionnet.graph",
          "fusionnet.passes", "fusionnet.codegen", "fusionnet.runtime", "fusionnet.explain",
          "fusionnet.viz", "fusionnet.serialization", "fusionnet.interpreter")

#: Engine names on the package, with the module that defines each.
LAZY_NAMES = {
    "trace": "fusionnet.tracer", "TraceError": "fusionnet.tracer",
    "Graph": "fusionnet.graph", "GraphBreak": "fusionnet.graph",
    "optimize": "fusionnet.passes", "explain": "fusionnet.explain",
    "fuse": "fusionnet.runtime.fuse", "FusedModule": "fusionnet.runtime.fuse",
    "FusionFallbackWarning": "fusionnet.runtime.runner",
    "FuseInputError": "fusionnet.runtime.runner", "export_graph": "fusionnet.viz",
    "save": "fusionnet.serialization", "load": "fusionnet.serialization",
    "SerializationError": "fusionnet.serialization",
}


def _run(code: str) -> None:
    """Run ``code`` in a fresh interpreter that imports this checkout's fusionnet."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fusionnet.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _none_loaded(after: str) -> str:
    return (f"import sys\n{after}\n"
            f"loaded = [m for m in {ENGINE!r} if m in sys.modules]\n"
            "assert not loaded, loaded\n")


def test_import_loads_no_engine():
    _run(_none_loaded("import fusionnet"))


def test_eager_work_loads_no_engine():
    _run(_none_loaded(
        "import fusionnet as torch\n"
        "from fusionnet import nn\n"
        "from fusionnet.nn import functional as F\n"
        "torch.rand(2)\n"
        "net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.LazyLinear(1))\n"
        "opt = torch.optim.SGD(net.parameters(), lr=0.1)\n"
        "loss = F.mse_loss(net(torch.rand(4, 2)), torch.zeros(4, 1))\n"
        "loss.backward(); opt.step()\n"
        "net.state_dict(); torch.manual_seed(0); torch.cat([torch.ones(2)] * 2).sum(axis=0)\n"))


def test_engine_names_resolve_on_first_use_and_are_listed():
    _run(f"import sys, fusionnet\n"
         f"for name, module in {LAZY_NAMES!r}.items():\n"
         "    assert name in fusionnet.__all__ and name in dir(fusionnet), name\n"
         "    value = getattr(fusionnet, name)\n"
         "    assert value is getattr(sys.modules[module], name), name\n"
         "from fusionnet import fuse, save\n"
         "assert fuse is fusionnet.fuse and save is fusionnet.save\n"
         "assert 'networkx' in sys.modules\n")


def test_submodules_are_reachable_as_attributes():
    _run("import fusionnet\n"
         "assert fusionnet.passes.optimize is fusionnet.optimize\n"
         "assert fusionnet.runtime.fuse is fusionnet.fuse\n"
         "assert fusionnet.graph.Graph is fusionnet.Graph\n")


def test_explain_stays_the_function_when_its_module_is_imported_first():
    # Importing the submodule binds it on the package; the package keeps the function.
    _run("import sys\n"
         "from fusionnet.explain import explain\n"
         "import fusionnet, fusionnet.explain\n"
         "assert fusionnet.explain is explain is sys.modules['fusionnet.explain'].explain\n")


def test_unknown_names_still_raise_attribute_error():
    _run("import fusionnet\n"
         "try:\n"
         "    fusionnet.no_such_name\n"
         "except AttributeError as err:\n"
         "    assert 'no_such_name' in str(err)\n"
         "else:\n"
         "    raise SystemExit('no AttributeError')\n"
         "assert not hasattr(fusionnet, 'zoo_like_typo')\n")
