"""The gradient graph stays small: built fast, and linear in the depth of the network."""

import time

import symbackprop as sb
from symbackprop.graph import topological_order


def mlp_loss(sizes, activation):
    x = sb.input("x", (None, sizes[0]))
    labels = sb.input("labels", (None,), "int64")
    h, params = x, []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        W, b = sb.param(f"W{i}", (fan_in, fan_out), init="glorot_uniform", seed=i), sb.param(f"b{i}", (fan_out,))
        params += [W, b]
        h = h @ W + b
        h = activation(h) if i < len(sizes) - 2 else h
    return sb.softmax_cross_entropy(h, labels), params


def test_gradient_of_a_mnist_sized_mlp_builds_fast():
    start = time.perf_counter()
    loss, params = mlp_loss([784, 256, 128, 10], sb.relu)
    grads = sb.grad(loss, params)
    elapsed = time.perf_counter() - start
    nodes = len(topological_order(grads))
    print(f"\n784-256-128-10 MLP: forward and gradient graphs built in {elapsed * 1e3:.1f} ms, {nodes} nodes")
    assert [g.shape for g in grads] == [p.shape for p in params]
    assert elapsed < 1.0


def gradient_nodes(depth):
    loss, params = mlp_loss([16] * (depth + 1), sb.tanh)
    return len(topological_order(sb.grad(loss, params)))


def test_gradient_graph_grows_linearly_with_depth():
    start = time.perf_counter()
    counts = {depth: gradient_nodes(depth) for depth in (10, 20, 40)}
    print(f"\ngradient nodes by depth {counts}, built in {(time.perf_counter() - start) * 1e3:.1f} ms")
    step = counts[20] - counts[10]
    assert step > 0
    assert abs((counts[40] - counts[20]) - 2 * step) <= 2
    assert all(count < 20 * depth for depth, count in counts.items())
