"""Plan actions that read a value back to the host: a ``while`` region driven by the host
(one read-back of the test per iteration) and a ``cond`` region (one read-back of the
test). A plan holding one is launched action by action, never captured in a graph.
"""
from __future__ import annotations

from ..lower import Branch, Loop

__all__ = ["HostLoop", "HostBranch", "Sequence"]


class Sequence:
    """Actions run in order (a device-side loop with its empty-input checks)."""

    def __init__(self, actions):
        self.actions = actions

    def __call__(self):
        for act in self.actions:
            act()


class HostLoop:
    """A ``while`` region driven by the host: one read-back of the test per iteration."""

    def __init__(self, plan, loop: Loop):
        self.plan, self.loop = plan, loop
        arrays = plan.arrays
        self.cond = plan.block(loop.cond.steps)
        self.body = plan.block(loop.body.steps)
        *new, self.nxt = loop.body.results
        self.state = [arrays[s] for s in loop.state]
        self.init = [arrays[i] for i in loop.init]
        self.new = [arrays[v] for v in new]
        # New values read from other state variables are staged, or they would overwrite
        # each other (a, b = b, a).
        self.staged = [plan.xp.empty_like(s) if v in loop.state and v != name else None
                       for name, v, s in zip(loop.state, new, self.state)]
        self.outs = [arrays[o] for o in loop.outs]

    def __call__(self):
        xp, arrays = self.plan.xp, self.plan.arrays
        for s, i in zip(self.state, self.init):
            xp.copyto(s, i)
        for act in self.cond:
            act()
        go = bool(xp.asnumpy(arrays[self.loop.cond.results[0]]))
        while go:
            for act in self.body:
                act()
            for tmp, v in zip(self.staged, self.new):
                if tmp is not None:
                    xp.copyto(tmp, v)
            for s, tmp, v in zip(self.state, self.staged, self.new):
                if v is not s:
                    xp.copyto(s, tmp if tmp is not None else v)
            go = bool(xp.asnumpy(arrays[self.nxt]))
        for o, s in zip(self.outs, self.state):
            xp.copyto(o, s)


class HostBranch:
    """A ``cond`` region: the test is read back, the taken block runs."""

    def __init__(self, plan, br: Branch):
        self.plan, self.br = plan, br
        self.then = plan.block(br.then.steps)
        self.orelse = plan.block(br.orelse.steps)

    def __call__(self):
        xp, arrays, br = self.plan.xp, self.plan.arrays, self.br
        taken = br.then if bool(xp.asnumpy(arrays[br.cond])) else br.orelse
        for act in (self.then if taken is br.then else self.orelse):
            act()
        for out, value in zip(br.outs, taken.results):
            xp.copyto(arrays[out], arrays[value])
