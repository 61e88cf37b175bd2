"""``explain(module, *inputs)``: what the engine does with a block, as a readable report.

The report holds the traced graph and its op counts, every graph break with its
reason and source line, the optimized graph with each fused kernel and each
fusion the passes declined (with the rule that stopped it), and, for a fused
module, its compiles, recompiles, fallbacks and the generated source of every
kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .autograd import no_grad
from .graph import Graph, GraphBreak, short_source
from .tracer import trace

__all__ = ["explain", "Report", "Inspection", "inspect_block", "runner_of"]


@dataclass
class Report:
    """The result of :func:`explain`; ``str(report)`` is the human-readable form."""

    name: str
    graph: Graph
    breaks: list[GraphBreak] = field(default_factory=list)
    optimized: Graph | None = None
    sections: list[tuple[str, str]] = field(default_factory=list)
    kernel_sources: dict = field(default_factory=dict)

    @property
    def op_counts(self) -> dict[str, int]:
        """Op name -> number of nodes in the traced graph."""
        return self.graph.op_counts()

    @property
    def node_count(self) -> int:
        """Number of nodes in the traced graph."""
        return self.graph.nx.number_of_nodes()

    @property
    def kernels(self) -> list[dict]:
        """The fused kernels of the optimized graph (top level): kind and op list of each."""
        if self.optimized is None:
            return []
        return [{"id": n, "kind": self.optimized.node(n)["group_kind"],
                 "ops": list(self.optimized.node(n)["ops"])}
                for n in self.optimized.nodes_of("group")]

    @property
    def regions(self) -> list[dict]:
        """The control-flow regions of the optimized graph, nested: kind, source line and,
        per body, its kernels and inner regions."""
        return [] if self.optimized is None else _regions(self.optimized)

    @property
    def fusion_notes(self) -> list[str]:
        """Decisions the passes recorded (fusions made and fusions declined, with why)."""
        return [] if self.optimized is None else list(self.optimized.notes)

    def add_section(self, title: str, text: str):
        """Append a titled section."""
        self.sections.append((title, text))

    def summary(self) -> str:
        """One line: nodes and ops traced, nodes and kernels after optimization, breaks."""
        ops = sum(self.op_counts.values())
        line = f"{self.name}: traced {self.node_count} nodes ({ops} ops)"
        if self.optimized is not None:
            steps = len(self.optimized.nodes_of("op"))
            line += (f" -> optimized {self.optimized.nx.number_of_nodes()} nodes, "
                     f"{len(self.kernels)} kernels" + (f" + {steps} layout steps"
                                                       if steps else ""))
        return line + f"; graph breaks: {len(self.breaks)}"

    def __str__(self) -> str:
        lines = [f"== explain: {self.name} ==", self.summary(),
                 "op counts: " + (", ".join(f"{k} x{v}" for k, v in self.op_counts.items())
                                  or "(none)")]
        if self.breaks:
            lines.append(f"graph breaks: {len(self.breaks)} (this block runs eagerly when "
                         "fused, with a warning)")
            for b in self.breaks:
                lines.append(f"  - {b.reason}\n    at {b.source}")
        else:
            lines.append("graph breaks: none")
        lines += ["", "-- traced graph --", str(self.graph)]
        if self.optimized is not None:
            lines += ["", "-- kernels --"]
            for k in self.kernels:
                lines.append(f"  g{k['id']}: {k['kind']}: {' + '.join(k['ops'])}")
            if self.regions:
                lines += ["", "-- loops and branches --"] + _region_lines(self.regions, "  ")
            lines += ["", "-- fusion decisions --"] + [f"  {n}" for n in self.fusion_notes]
            lines += ["", "-- optimized graph --", str(self.optimized)]
        if self.graph.converted:
            lines += ["", "-- converted source (autograph) --"]
            for name, src in self.graph.converted.items():
                lines += [f"  {name}:"] + ["    " + line for line in src.splitlines()]
        for title, text in self.sections:
            lines += ["", f"-- {title} --", text]
        return "\n".join(lines)

    __repr__ = __str__


def _regions(graph: Graph) -> list[dict]:
    from .regions import bodies_of, region_of  # noqa: PLC0415

    out = []
    for n in graph.regions():
        d = graph.node(n)
        if region_of(d).kernel:
            continue
        bodies = {}
        for field, body in bodies_of(d):
            bodies[field] = {"kernels": [{"id": k, "kind": body.node(k)["group_kind"],
                                          "ops": list(body.node(k)["ops"])}
                                         for k in body.nodes_of("group")],
                             "regions": _regions(body)}
        out.append({"id": n, "kind": d["kind"], "source": d.get("source", ""),
                    "bodies": bodies})
    return out


def _region_lines(regions, indent) -> list[str]:
    lines = []
    for r in regions:
        lines.append(f"{indent}{r['kind']} r{r['id']} at {short_source(r['source'])}")
        for field, body in r["bodies"].items():
            ks = "; ".join(f"g{k['id']} {k['kind']}: {' + '.join(k['ops'])}"
                           for k in body["kernels"]) or "(no kernels)"
            lines.append(f"{indent}  {field}: {ks}")
            lines += _region_lines(body["regions"], indent + "    ")
    return lines


@dataclass
class Inspection:
    """What the engine makes of a block: the plain module behind any ``fuse`` wrapper,
    its runner (None if not fused), the traced graph (breaks recorded) and the
    optimized graph (None when the trace is incomplete)."""

    target: object
    runner: object
    traced: Graph
    optimized: Graph | None


def runner_of(module):
    """The ``FusionRunner`` of a ``fuse(...)`` wrapper or ``@fuse`` instance, else None."""
    return module.__dict__.get("_fusion_runner") if hasattr(module, "__dict__") else None


def inspect_block(module, inputs, passes=None) -> Inspection:
    """Find the runner, trace (recording breaks) and optimize with the runner's passes:
    the one way ``explain`` and ``export_graph`` look at a block."""
    from .passes import optimize  # noqa: PLC0415 - passes import graph machinery
    from .runtime.runner import eager_region  # noqa: PLC0415

    runner = runner_of(module)
    target = runner.module if runner is not None else module
    # Inside the eager region a @fuse-decorated block runs its plain forward, so the
    # tracer sees its ops instead of one compiled call.
    with eager_region():
        graph = trace(target, *inputs, on_break="record")
    optimized = None
    if graph.complete:
        optimized = optimize(graph, passes=passes if runner is None else runner.passes)
    return Inspection(target, runner, graph, optimized)


def explain(module, *inputs, passes=None) -> Report:
    """Trace ``module(*inputs)`` (recording, not raising, graph breaks), optimize it when
    the trace is complete, and report; a fused module also reports its runtime."""
    from .runtime.step import FusedStep  # noqa: PLC0415 - the runtime imports this module

    if isinstance(module, FusedStep):  # a compiled training step (fuse on a function)
        return module.explain(*inputs)
    seen = inspect_block(module, inputs, passes)
    report = Report(type(seen.target).__name__, seen.traced, list(seen.traced.breaks),
                    seen.optimized)
    if seen.runner is not None:
        _runtime_sections(report, seen.runner, inputs)
    return report


def _children_lines(runner, indent) -> list[str]:
    """Children that run compiled while this module's own forward runs eagerly."""
    lines = []
    for child in runner.children.values():
        entries = list(dict.fromkeys(child.exact.values()))
        state = "; ".join("compiled" if e.fn is not None else
                          f"eager ({e.reason}{' at ' + e.source if e.source else ''})"
                          for e in entries) or "not called yet"
        lines.append(f"{indent}child {child.name}: {state}")
        lines += _children_lines(child, indent + "  ")
    return lines


def _runtime_sections(report: Report, runner, inputs) -> None:
    with no_grad():
        runner(tuple(inputs), {})  # make sure this signature is compiled (or fell back)
    lines = [f"compiles: {len(runner.compiles)}, cached signatures: {len(runner.exact)}, "
             f"evictions: {runner.evictions}"]
    lines += [f"  compile {i + 1}: {why}" for i, why in enumerate(runner.compiles)]
    for entry in dict.fromkeys(runner.exact.values()):
        if entry.fn is None:
            where = f" at {entry.source}" if entry.source else ""
            how = ("its own forward runs eagerly, its children compiled" if entry.partial
                   else "fallback to eager")
            lines.append(f"  {how}: {entry.reason}{where}")
        else:
            sizes = "symbolic batch size" if entry.generic else (
                f"exact sizes ({entry.batch_note})")
            lines.append(f"  compiled {entry.compiled.path} ({sizes}); "
                         f"{entry.compiled.stats_label} {entry.compiled.compile_stats()}")
            report.kernel_sources.update(entry.compiled.kernel_sources)
    lines += _children_lines(runner, "  ")
    report.add_section("runtime", "\n".join(lines))
    back = _backward_lines(runner, inputs)
    if back:
        report.add_section("backward", "\n".join(back))
    if report.kernel_sources:
        report.add_section("generated source", "\n\n".join(report.kernel_sources.values()))


def _backward_lines(runner, inputs) -> list[str]:
    """For a module whose parameters require grad: the compiled backward of the grad-mode
    signature (forward and backward kernels, what the forward saves), or why it replays."""
    from .autograd import enable_grad  # noqa: PLC0415
    from .runtime.phases import kernel_lines  # noqa: PLC0415

    if not any(p.requires_grad for p in runner.module.parameters()):
        return []
    with enable_grad():
        runner(tuple(inputs), {})
    lines = []
    for entry in dict.fromkeys(runner.exact.values()):
        if not entry.grad_enabled or entry.fn is None:
            continue
        back = entry.joint
        if back is None:
            lines.append(f"  backward replays the traced graph eagerly: "
                         f"{entry.joint_reason or 'no output requires grad'}")
            continue
        lines.append(f"  compiled backward {back.compiled.path} "
                     f"({'symbolic batch size' if back.generic else 'exact sizes'}): one "
                     "native call per backward()")
        lines += kernel_lines(entry.optimized, "  ", "forward kernels")
        lines += kernel_lines(back.graph, "  ", "backward kernels")
        lines.append(f"  saved by the forward for the backward: {back.n_saved} values, "
                     f"{back.saved_bytes} bytes at the traced sizes")
        lines.append(f"  gradients: {len(back.leaves)} ("
                     f"{sum(k == 'param' for k, _ in back.leaves)} parameters)")
    return lines
