"""``explain(module, *inputs)``: what the engine sees in a block, as a readable report.

Today the report holds the traced graph, its op counts and every graph break
with its reason and source line. Later stages (fusion decisions, kernels,
recompiles) add sections to the same :class:`Report`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Graph, GraphBreak
from .tracer import trace

__all__ = ["explain", "Report"]


@dataclass
class Report:
    """The result of :func:`explain`; ``str(report)`` is the human-readable form."""

    name: str
    graph: Graph
    breaks: list[GraphBreak] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)

    @property
    def op_counts(self) -> dict[str, int]:
        """Op name -> number of nodes in the traced graph."""
        return self.graph.op_counts()

    @property
    def node_count(self) -> int:
        """Number of nodes in the traced graph."""
        return self.graph.nx.number_of_nodes()

    def add_section(self, title: str, text: str):
        """Append a titled section (used by later engine stages)."""
        self.sections.append((title, text))

    def __str__(self) -> str:
        lines = [f"== explain: {self.name} ==",
                 f"traced graph: {self.node_count} nodes, "
                 f"{sum(self.op_counts.values())} ops, hash {self.graph.content_hash()}",
                 "op counts: " + (", ".join(f"{k} x{v}" for k, v in self.op_counts.items())
                                  or "(none)")]
        if self.breaks:
            lines.append(f"graph breaks: {len(self.breaks)} (this block cannot run as one "
                         "graph; it falls back to eager)")
            for b in self.breaks:
                lines.append(f"  - {b.reason}\n    at {b.source}")
        else:
            lines.append("graph breaks: none")
        lines += ["", str(self.graph)]
        for title, text in self.sections:
            lines += ["", f"-- {title} --", text]
        return "\n".join(lines)

    __repr__ = __str__


def explain(module, *inputs) -> Report:
    """Trace ``module(*inputs)``, recording (not raising) graph breaks, and report."""
    graph = trace(module, *inputs, on_break="record")
    return Report(type(module).__name__, graph, list(graph.breaks))
