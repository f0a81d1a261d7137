"""Every primitive op has a rule in every interpretation table, and a gradient test."""

import numpy as np
import pytest
from graph_builder import Builder
from test_gradients import GRADIENT_CASES

import symbackprop as sb
from symbackprop.autodiff import vjp_rules
from symbackprop.evaluate import eval_rules
from symbackprop.graph import topological_order
from symbackprop.ops import PRIMITIVES, shape_rules

TABLES = {"shape_rules": shape_rules, "eval_rules": eval_rules, "vjp_rules": vjp_rules}


def test_primitives_are_unique():
    assert len(set(PRIMITIVES)) == len(PRIMITIVES)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_table_has_a_rule_for_every_primitive(table):
    rules = TABLES[table]
    assert sorted(set(PRIMITIVES) - set(rules)) == [], f"{table} misses rules"
    assert all(callable(rule) for rule in rules.values())


@pytest.mark.parametrize("table", sorted(TABLES))
def test_table_has_no_op_that_is_not_a_primitive(table):
    assert sorted(set(TABLES[table]) - set(PRIMITIVES)) == []


def test_every_primitive_is_exercised_by_a_gradient_test():
    builder, seen = Builder(), set()
    for build in GRADIENT_CASES.values():
        out, _ = build(builder)
        seen.update(node.op for node in topological_order([out]))
    assert sorted(set(PRIMITIVES) - seen) == []


def test_a_missing_evaluation_rule_names_the_op(monkeypatch):
    monkeypatch.delitem(eval_rules, "matmul")
    x = sb.input("x", (2, 2))
    with pytest.raises(sb.MissingRuleError, match="'matmul' has no rule in the evaluation table"):
        sb.evaluate(x @ x, {x: np.eye(2)})


def test_a_missing_vjp_rule_names_the_op(monkeypatch):
    monkeypatch.delitem(vjp_rules, "transpose")
    x = sb.input("x", (2, 3))
    with pytest.raises(sb.MissingRuleError, match="'transpose' has no rule in the vector-Jacobian table"):
        sb.grad(x.T.sum(), x)
