"""The base every engine compiler shares: ``visit_<NodeName>`` dispatch and an explicit
``UNSUPPORTED`` set, so ``supports(node)`` answers before a job starts (at ``plan``), never mid-job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from featurestore.errors import DefinitionError
from featurestore.types import DataType
from transforms import ir
from transforms.aggregation import Aggregation
from transforms.type_rules import _Checker


class Compiler:
    """Subclasses set ``ENGINE`` and ``UNSUPPORTED`` (node class names, and aggregation functions
    spelled ``"agg:<function>"``) and define one ``visit_<NodeName>`` per supported node."""

    ENGINE = "?"
    UNSUPPORTED: frozenset[str] = frozenset()

    def __init__(self, schema: Mapping[str, DataType] | None = None):
        self.schema = schema

    @classmethod
    def unsupported_in(cls, obj: ir.Expr | Aggregation | Iterable) -> list[str]:
        """The names of the node kinds (or ``agg:<function>``) in ``obj`` this engine cannot run."""
        found: dict[str, None] = {}
        items = [obj] if isinstance(obj, (ir.Expr, Aggregation)) else list(obj)
        for item in items:
            if item is None:
                continue
            if isinstance(item, Aggregation):
                tag = f"agg:{item.function}"
                if tag in cls.UNSUPPORTED:
                    found.setdefault(tag, None)
                continue
            for node in item.walk():
                name = type(node).__name__
                if name in cls.UNSUPPORTED or not hasattr(cls, f"visit_{name}"):
                    found.setdefault(name, None)
        return list(found)

    @classmethod
    def supports(cls, obj: ir.Expr | Aggregation | Iterable) -> bool:
        return not cls.unsupported_in(obj)

    @classmethod
    def check_supported(cls, obj: ir.Expr | Aggregation | Iterable, *, view: str | None = None) -> None:
        """Raise DefinitionError naming what the engine cannot run (call this at plan time)."""
        missing = cls.unsupported_in(obj)
        if missing:
            raise DefinitionError(
                f"the {cls.ENGINE} engine does not support {', '.join(missing)}", obj=view
            )

    def visit(self, node: ir.Expr):
        name = type(node).__name__
        method = getattr(self, f"visit_{name}", None)
        if method is None or name in self.UNSUPPORTED:
            raise DefinitionError(f"the {self.ENGINE} engine does not support {name} (in {node!r})")
        return method(node)

    def source_type(self, node: ir.Expr) -> DataType | None:
        """The type of ``node`` when a schema was given, else None (used by casts)."""
        if self.schema is None:
            return None
        return _Checker(self.schema, None).t(node)
