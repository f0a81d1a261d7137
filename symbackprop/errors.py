"""Exceptions raised by symbackprop, all subclasses of the built-in ones users expect."""


class GraphError(ValueError):
    """A graph could not be built: wrong shapes, dtypes or arguments for an op."""


class MissingRuleError(NotImplementedError):
    """An op has no rule in one of the interpretation tables."""

    def __init__(self, table: str, op: str, detail: str = ""):
        message = f"op {op!r} has no rule in the {table} table"
        super().__init__(message + (f" ({detail})" if detail else ""))
