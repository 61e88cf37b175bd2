"""Shrink a failing case: drop statements of ``forward`` (and outputs, mutations) while
a mismatch of the same kind remains.

Greedy, one statement (a line, or a ``for``/``with``/``if`` with its body) at a time;
a removal that breaks the code (a name used later) makes eager and fused raise alike,
so the mismatch disappears and the removal is undone. Each try runs the case (a numba
compile or a disk-cache load), so shrinking a 10-line block takes a few dozen seconds.
"""
from __future__ import annotations

import ast
import os
import re
import tempfile

import fusionnet

from .run import run_case

__all__ = ["shrink_source", "main"]


def _forward_span(lines: list[str]) -> tuple[int, int]:
    """(first, last) line index of forward's body, the ``return`` excluded."""
    start = next(i for i, line in enumerate(lines) if line.startswith("    def forward("))
    ret = next(i for i in range(start, len(lines)) if lines[i].startswith("        return "))
    return start + 1, ret


def _statements(lines: list[str], first: int, last: int) -> list[tuple[int, int]]:
    """(start, end) line ranges of forward's top-level statements."""
    out, i = [], first
    while i < last:
        j = i + 1
        while j < last and lines[j].startswith("            ") or (
                j < last and lines[j].startswith("        else:")):
            j += 1
        out.append((i, j))
        i = j
    return out


def _kinds(source: str, folder: str, fuse) -> set:
    path = os.path.join(folder, "shrinking.py")
    with open(path, "w") as f:
        f.write(source)
    result = run_case(path, fuse=fuse)
    return {m.kind for m in result.mismatches}


def shrink_source(source: str, kind: str | None = None, log=None, fuse=fusionnet.fuse) -> str:
    """The smallest source found that still has a mismatch of ``kind`` (by default the
    first kind the original shows). ``fuse`` is what the case is compared against."""
    folder = tempfile.mkdtemp(prefix="fusionnet-shrink-")
    kinds = _kinds(source, folder, fuse)
    if not kinds:
        return source
    kind = kind or sorted(kinds)[0]

    def still(candidate: str) -> bool:
        try:
            ast.parse(candidate)
        except SyntaxError:
            return False
        return kind in _kinds(candidate, folder, fuse)

    source = _try(source, still, lambda s: re.sub(r"MUTATIONS = \[.*\]", "MUTATIONS = []", s))
    changed = True
    while changed:
        changed = False
        lines = source.splitlines(keepends=True)
        first, last = _forward_span(lines)
        ret = lines[last].strip()
        # Return an earlier value instead (the earliest that still fails), so that what
        # follows it becomes dead code the next passes drop.
        assigned = [m.group(1) for line in lines[first:last]
                    if (m := re.match(r"        (\w+) = ", line))]
        for keep in dict.fromkeys(assigned):
            if ret == f"return {keep}":
                break
            candidate = "".join(lines[:last]) + f"        return {keep}\n" + "".join(
                lines[last + 1:])
            if still(candidate):
                source, changed = candidate, True
                break
        if changed:
            continue
        for start, end in reversed(_statements(lines, first, last)):
            candidate = "".join(lines[:start] + lines[end:])
            if still(candidate):
                source, changed = candidate, True
                if log:
                    print(f"shrink: dropped {lines[start].strip()}", file=log)
                break
    return _drop_unused_attributes(source, still)


def _drop_unused_attributes(source: str, still) -> str:
    """Remove ``__init__`` lines whose attribute forward no longer mentions (checked by
    running: fewer random draws change the values the others get)."""
    lines = source.splitlines(keepends=True)
    first, last = _forward_span(lines)
    body = "".join(lines[first:last + 1])
    for i in reversed(range(first)):
        m = re.match(r'        (?:self\.(\w+) = |self\.register_buffer\("(\w+)")', lines[i])
        if m and not re.search(rf"self\.{m.group(1) or m.group(2)}\b", body):
            candidate = "".join(lines[:i] + lines[i + 1:])
            if still(candidate):
                lines = candidate.splitlines(keepends=True)
    return "".join(lines)


def _try(source: str, still, edit) -> str:
    candidate = edit(source)
    return candidate if candidate != source and still(candidate) else source


def main(path: str, kind: str | None = None, log=None) -> str:
    """Shrink the case file at ``path``; returns the shrunk source."""
    with open(path) as f:
        source = "".join(line for line in f if not line.startswith("#   ") and
                         not line.startswith("# Observed in the fuzz run"))
    return shrink_source(source, kind, log)
