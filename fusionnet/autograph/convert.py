"""Rewrite a function's ``while`` / ``if`` statements into calls of runtime helpers.

When tracing meets ``bool()`` of a traced value, the statement whose test asked for it
is converted (AutoGraph style), and only that statement: plain Python elsewhere stays
as written. A converted statement calls :mod:`fusionnet.autograph.helpers`, which run
it as ordinary Python when the condition is a Python value and record a structured
``while`` / ``cond`` region when it is a traced tensor::

    while X.abs().sum() > 1:             def __cond_1(X):
        X /= 2                               return X.abs().sum() > 1
                                         def __body_1(X):
                                             X /= 2
                                             return (X,)
                                         (X,) = __ag.while_stmt(__cond_1, __body_1,
                                                                (__ag.ld(lambda: X),), ('X',))

The state of a statement is every name it assigns (or mutates in place: ``h[i] = v``,
``h.mul_(2)``). ``break`` and ``continue`` in a converted loop become flags in its
state; the statements after them are guarded by the flags (and ``if`` statements that
set a flag are converted too, so a tensor condition there is handled). An ``if`` whose
branch ends in ``return`` takes the statements after it into its other branch, so
early returns become a value of the region. Tests of converted statements evaluate
``and`` / ``or`` / ``not`` through helpers, since Python's own would call ``bool()``.

The converted function is built in a factory that receives the original closure's
values (and ``__class__``, so zero-argument ``super()`` still works); its source is
kept (``Converted.source``) so ``explain`` can show it.
"""
from __future__ import annotations

import ast
import copy
import inspect
import itertools
import textwrap
import types
from dataclasses import dataclass

__all__ = ["convert", "Converted", "ConversionError", "statement_at"]

_AG = "__ag"
#: Prefixes of the functions and flags the rewrite itself introduces.
_GENERATED = ("__cond_", "__body_", "__then_", "__else_")


class ConversionError(Exception):
    """A function cannot be converted; ``str()`` says why (no source, unsupported form)."""


@dataclass
class Converted:
    """A converted function and the source it was compiled from."""

    fn: types.FunctionType
    source: str
    lines: frozenset


def _source(fn) -> tuple[ast.FunctionDef, int, str]:
    code = fn.__code__
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError) as err:
        raise ConversionError(f"the source of {fn.__qualname__} is not available ({err}); "
                              "functions defined with exec() or in an interactive prompt "
                              "cannot be converted") from None
    text = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise ConversionError(f"cannot parse the source of {fn.__qualname__}: {err}") from None
    node = tree.body[0] if tree.body else None
    if isinstance(node, ast.AsyncFunctionDef) or not isinstance(node, ast.FunctionDef):
        kind = "a lambda" if fn.__name__ == "<lambda>" else type(node).__name__
        raise ConversionError(f"{fn.__qualname__} is {kind}, not a def statement; only def "
                              "functions can be converted")
    # ast line numbers count from the start of the snippet: shift to the file's lines.
    ast.increment_lineno(tree, start - 1)
    node.decorator_list = []
    del code
    return node, start, text


def statement_at(fn, line: int) -> str:
    """The kind of statement (``while``, ``if``, ``ifexp``) whose test spans ``line``, or ''."""
    try:
        fdef, _, _ = _source(fn)
    except ConversionError:
        return ""
    hit = _innermost_test(fdef, line)
    return "" if hit is None else _kind(hit)


def _kind(node) -> str:
    return {ast.While: "while", ast.If: "if", ast.IfExp: "ifexp"}[type(node)]


def _innermost_test(tree, line: int):
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.While, ast.If, ast.IfExp)):
            test = node.test
            if test.lineno <= line <= (test.end_lineno or test.lineno):
                if best is None or node.lineno >= best.lineno:
                    best = node
    return best


# ---- name analysis ---------------------------------------------------------------------

class _Stores(ast.NodeVisitor):
    """Names a block of statements assigns or mutates in place (not in nested defs)."""

    def __init__(self):
        self.names: list[str] = []

    def add(self, name):
        if name not in self.names:
            self.names.append(name)

    def visit_Name(self, node):  # noqa: N802 - ast visitor protocol
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.add(node.id)

    def visit_Subscript(self, node):  # noqa: N802
        if isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name):
            self.add(node.value.id)  # h[i] = v writes h
        self.generic_visit(node)

    def visit_Call(self, node):  # noqa: N802
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr.endswith("_") and not f.attr.startswith(
                "_") and isinstance(f.value, ast.Name) and f.value.id != _AG:
            self.add(f.value.id)  # h.mul_(2) writes h
        self.generic_visit(node)

    def visit_FunctionDef(self, node):  # noqa: N802
        if not node.name.startswith(_GENERATED):
            self.add(node.name)  # a nested def binds its name, its body is its own scope

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node):  # noqa: N802
        return


def _stores(stmts) -> list[str]:
    v = _Stores()
    for s in stmts:
        v.visit(s)
    return v.names


def _contains(stmts, kinds, stop=(ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                  ast.Lambda)) -> bool:
    """Whether ``stmts`` hold a node of ``kinds`` outside nested defs (and, for
    break/continue, outside nested loops)."""
    loops = (ast.While, ast.For, ast.AsyncFor)
    stack = list(stmts)
    while stack:
        node = stack.pop()
        if isinstance(node, kinds):
            return True
        if isinstance(node, stop):
            continue
        if isinstance(node, loops) and not (set(kinds) - {ast.Break, ast.Continue}):
            stack.extend(node.orelse)  # break/continue inside a nested loop are its own
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


# ---- building blocks ---------------------------------------------------------------------

def _name(id_, store=False):
    return ast.Name(id=id_, ctx=ast.Store() if store else ast.Load())


def _ag(attr):
    return ast.Attribute(value=_name(_AG), attr=attr, ctx=ast.Load())


def _call(func, *args):
    return ast.Call(func=func, args=list(args), keywords=[])


def _const(v):
    return ast.Constant(value=v)


def _tuple(elts, store=False):
    return ast.Tuple(elts=list(elts), ctx=ast.Store() if store else ast.Load())


def _assign(target_names, value):
    return ast.Assign(targets=[_tuple([_name(n, True) for n in target_names], True)],
                      value=value)


def _set(name, value):
    return ast.Assign(targets=[_name(name, True)], value=value)


def _def(name, params, body):
    args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params],
                         vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    return ast.FunctionDef(name=name, args=args, body=body or [ast.Pass()],
                           decorator_list=[], returns=None)


def _load_state(names):
    """``(__ag.ld(lambda: a), ...)``: current values, ``Undefined`` where unbound."""
    return _tuple([_call(_ag("ld"), ast.Lambda(args=ast.arguments(
        posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
        defaults=[]), body=_name(n))) for n in names])


def _lambda(expr):
    return ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[],
                                         kw_defaults=[], kwarg=None, defaults=[]), body=expr)


class _Tests(ast.NodeTransformer):
    """``a and b`` -> ``__ag.and_(lambda: a, lambda: b)``; ``not a`` -> ``__ag.not_(a)``."""

    def visit_BoolOp(self, node):  # noqa: N802
        self.generic_visit(node)
        fn = _ag("and_" if isinstance(node.op, ast.And) else "or_")
        out = node.values[-1]
        for v in reversed(node.values[:-1]):
            out = _call(fn, _lambda(v), _lambda(out))
        return out

    def visit_UnaryOp(self, node):  # noqa: N802
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return _call(_ag("not_"), node.operand)
        return node

    def visit_Compare(self, node):  # noqa: N802
        self.generic_visit(node)
        if len(node.ops) == 1:
            return node
        # a < b < c calls bool() on (a < b): spell it as and_ of the pairs
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            parts.append(ast.Compare(left=left, ops=[op], comparators=[right]))
            left = right
        out = parts[-1]
        for p in reversed(parts[:-1]):
            out = _call(_ag("and_"), _lambda(p), _lambda(out))
        return out

    def visit_Lambda(self, node):  # noqa: N802
        return node  # a user lambda in a test is its own business


def _test(expr):
    return ast.fix_missing_locations(_Tests().visit(copy.deepcopy(expr)))


# ---- the rewrite -------------------------------------------------------------------------

class _Rewriter:
    """Converts the statements whose tests start on ``lines`` (and what they need)."""

    def __init__(self, lines):
        self.lines = set(lines)
        self.counter = itertools.count(1)
        self.converted: list[int] = []

    def wanted(self, node) -> bool:
        test = node.test
        return any(test.lineno <= ln <= (test.end_lineno or test.lineno) for ln in self.lines)

    def block(self, stmts, loop_flags=None) -> list:
        """Rewrite a statement list; ``loop_flags`` = (break flag, continue flag) names
        while inside a converted loop's body."""
        out = []
        stmts = list(stmts)
        i = 0
        while i < len(stmts):
            s = stmts[i]
            rest = stmts[i + 1:]
            if isinstance(s, ast.If) and self.wanted(s) and _ends_in_return(s.body) \
                    and not s.orelse and rest:
                # `if c: ...; return a` followed by more: the rest is the else branch.
                s = ast.If(test=s.test, body=s.body, orelse=rest)
                ast.copy_location(s, stmts[i])
                rest = []
                stmts = stmts[:i + 1]
            new = self.stmt(s, loop_flags)
            out.extend(new)
            if loop_flags is not None and _contains([s], (ast.Break, ast.Continue)) and rest:
                # Statements after a possible break/continue run only if neither happened.
                guard = _call(_ag("and_"), _lambda(_call(_ag("not_"), _name(loop_flags[0]))),
                              _lambda(_call(_ag("not_"), _name(loop_flags[1]))))
                guarded = ast.copy_location(ast.If(test=guard, body=rest, orelse=[]), rest[0])
                out.extend(self.if_stmt(guarded, loop_flags, converted_test=True))
                return out
            i += 1
        return out

    def stmt(self, s, loop_flags) -> list:
        if isinstance(s, ast.Break) and loop_flags is not None:
            return [_set(loop_flags[0], _const(True))]
        if isinstance(s, ast.Continue) and loop_flags is not None:
            return [_set(loop_flags[1], _const(True))]
        if isinstance(s, ast.While) and self.wanted(s):
            return self.while_stmt(s)
        if isinstance(s, ast.If) and (self.wanted(s) or (
                loop_flags is not None and _contains([s], (ast.Break, ast.Continue)))):
            return self.if_stmt(s, loop_flags)
        # Recurse into compound statements that are not converted themselves.
        for field in ("body", "orelse", "finalbody"):
            if hasattr(s, field) and isinstance(getattr(s, field), list) and not isinstance(
                    s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = loop_flags if not isinstance(s, (ast.While, ast.For)) else None
                setattr(s, field, self.block(getattr(s, field), inner))
        if hasattr(s, "handlers"):
            for h in s.handlers:
                h.body = self.block(h.body, loop_flags)
        _IfExps(self).visit(s)
        return [s]

    def while_stmt(self, s: ast.While) -> list:
        if s.orelse:
            raise ConversionError(f"line {s.lineno}: a `while ... else` on a tensor condition "
                                  "is not supported")
        if _contains(s.body, (ast.Return,)):
            raise ConversionError(f"line {s.lineno}: `return` inside a while loop whose "
                                  "condition is a tensor is not supported (assign the value "
                                  "and break instead)")
        n = next(self.counter)
        self.converted.append(s.lineno)
        flags = (f"__break_{n}", f"__continue_{n}")
        jumps = _contains(s.body, (ast.Break, ast.Continue))
        body = self.block(s.body, flags if jumps else None)
        test = _test(s.test)
        pre = []
        state = _stores(body)
        if jumps:
            # Both flags live in the loop's state; `continue` resets at each iteration.
            test = _call(_ag("and_"), _lambda(_call(_ag("not_"), _name(flags[0]))),
                         _lambda(test))
            body = [_set(flags[1], _const(False))] + body
            pre = [_set(flags[0], _const(False)), _set(flags[1], _const(False))]
            state = list(flags) + [x for x in state if x not in flags]
        cond_fn = _def(f"__cond_{n}", state, [ast.Return(value=test)])
        body_fn = _def(f"__body_{n}", state, body + [ast.Return(value=_tuple(
            [_name(x) for x in state]))])
        call = _call(_ag("while_stmt"), _name(cond_fn.name), _name(body_fn.name),
                     _load_state(state), _tuple([_const(x) for x in state]), _const(s.lineno))
        out = pre + [cond_fn, body_fn, _assign(state, call)] if state else pre + [
            cond_fn, body_fn, ast.Expr(value=call)]
        for x in out:
            ast.copy_location(x, s)
        return out

    def if_stmt(self, s: ast.If, loop_flags, converted_test=False) -> list:
        n = next(self.counter)
        self.converted.append(s.lineno)
        then = self.block(s.body, loop_flags)
        orelse = self.block(s.orelse, loop_flags)
        returns = _ends_in_return(s.body) or _ends_in_return(s.orelse)
        if returns and not (_ends_in_return(s.body) and _ends_in_return(s.orelse)):
            raise ConversionError(f"line {s.lineno}: a tensor-dependent `if` where only one "
                                  "branch returns, with nothing after it to return otherwise")
        ret = f"__return_{n}"
        if returns:
            then, orelse = _returns_to(then, ret), _returns_to(orelse, ret)
        state = _stores(then + orelse)
        test = s.test if converted_test else _test(s.test)
        then_fn = _def(f"__then_{n}", state, then + [ast.Return(value=_tuple(
            [_name(x) for x in state]))])
        else_fn = _def(f"__else_{n}", state, orelse + [ast.Return(value=_tuple(
            [_name(x) for x in state]))])
        call = _call(_ag("if_stmt"), test, _name(then_fn.name), _name(else_fn.name),
                     _load_state(state), _tuple([_const(x) for x in state]), _const(s.lineno))
        out = [then_fn, else_fn, _assign(state, call) if state else ast.Expr(value=call)]
        if returns:
            out.append(ast.Return(value=_name(ret)))
        for x in out:
            ast.copy_location(x, s)
        return out


class _IfExps(ast.NodeTransformer):
    """``a if c else b`` on a converted line -> ``__ag.if_exp(c, lambda: a, lambda: b)``."""

    def __init__(self, rewriter):
        self.rw = rewriter

    def visit_IfExp(self, node):  # noqa: N802
        self.generic_visit(node)
        if not self.rw.wanted(node):
            return node
        self.rw.converted.append(node.lineno)
        return ast.copy_location(_call(_ag("if_exp"), _test(node.test), _lambda(node.body),
                                       _lambda(node.orelse), _const(node.lineno)), node)

    def visit_FunctionDef(self, node):  # noqa: N802
        return node  # nested defs are not converted

    visit_Lambda = visit_FunctionDef


def _ends_in_return(stmts) -> bool:
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, ast.Return):
        return True
    if isinstance(last, ast.If):
        return _ends_in_return(last.body) and _ends_in_return(last.orelse)
    return False


def _returns_to(stmts, name):
    """``return v`` (at the end of every path) -> ``name = v``."""
    out = list(stmts)
    last = out[-1] if out else None
    if isinstance(last, ast.Return):
        out[-1] = ast.copy_location(_set(name, last.value or _const(None)), last)
    elif isinstance(last, ast.If):
        last.body = _returns_to(last.body, name)
        last.orelse = _returns_to(last.orelse, name)
    return out


def _with_enclosing_loops(fdef, lines: set) -> set:
    """``lines`` plus the test line of every loop whose ``break``/``continue`` sits in a
    statement to convert (a flag cannot leave a converted branch otherwise)."""
    rw = _Rewriter(lines)
    out = set(lines)

    def visit(stmts, loop):
        for s in stmts:
            if isinstance(s, (ast.If, ast.IfExp)) and rw.wanted(s) and loop is not None and \
                    _contains(s.body + getattr(s, "orelse", []), (ast.Break, ast.Continue)):
                if isinstance(loop, ast.For):
                    raise ConversionError(f"line {s.lineno}: `break`/`continue` under a "
                                          "tensor condition inside a `for` loop is not "
                                          "supported (use a while loop)")
                out.add(loop.test.lineno)
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            inner = s if isinstance(s, (ast.While, ast.For)) else loop
            for field in ("body", "orelse", "finalbody"):
                if isinstance(getattr(s, field, None), list):
                    visit(getattr(s, field), inner if field == "body" else loop)
            for h in getattr(s, "handlers", []):
                visit(h.body, loop)

    visit(fdef.body, None)
    return out


def convert(fn, lines) -> Converted:
    """Convert the ``while`` / ``if`` statements (and conditional expressions) of ``fn``
    whose tests span one of ``lines`` (line numbers in ``fn``'s file)."""
    from . import helpers  # noqa: PLC0415 - the converted code's runtime

    fn = inspect.unwrap(fn)
    fdef, _, _ = _source(fn)
    rw = _Rewriter(_with_enclosing_loops(fdef, set(lines)))
    fdef.body = rw.block(fdef.body)
    if not rw.converted:
        raise ConversionError(f"no `while` or `if` statement of {fn.__qualname__} has its "
                              f"condition on line {sorted(lines)}; only those statements and "
                              "conditional expressions are converted")
    freevars = list(fn.__code__.co_freevars)
    params = [_AG] + [v for v in freevars]
    if "__class__" not in params:
        params.append("__class__")
    factory = _def("__fusionnet_factory", params, [fdef, ast.Return(value=_name(fdef.name))])
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    source = ast.unparse(fdef)
    # Compiled under the original file name, with the original line numbers on every
    # statement: tracebacks, source lines and `explain` point at the user's own code.
    code = compile(module, fn.__code__.co_filename, "exec")
    namespace: dict = {}
    exec(code, fn.__globals__, namespace)  # noqa: S102 - our own rewrite of the user's function
    cells = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            cells.append(cell.cell_contents)
        except ValueError:
            cells.append(None)
    owner = dict(zip(fn.__code__.co_freevars, cells)).get("__class__")
    args = [helpers] + cells + ([] if "__class__" in freevars else [owner])
    new = namespace["__fusionnet_factory"](*args)
    new.__defaults__, new.__kwdefaults__ = fn.__defaults__, fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__fusionnet_converted__ = source
    return Converted(new, source, frozenset(rw.converted))
