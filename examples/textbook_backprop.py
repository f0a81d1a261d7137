"""Backpropagation by hand, checked by machine: the classic 2-2-2 worked example.

Many courses teach backpropagation on one tiny network: two inputs (0.05 and 0.10), two
hidden sigmoid units, two sigmoid outputs that should produce 0.01 and 0.99, eight
weights w1..w8 = 0.15, 0.20, ..., 0.55, biases 0.35 and 0.60, the squared error
E = ½Σ(target − out)² and a learning rate of 0.5. This script works that example the way it
is written on a board: every net input and output of the forward pass, the total error,
every δ of the backward pass, and each weight's gradient and new value. Each number is
computed by symbackprop (``sb.evaluate`` of the graph and of ``sb.grad``) and printed
beside the formula symbackprop derived for it (``sb.formula(..., expand=True)``).

It then repeats the same update many times with a compiled function and shows the error
falling.

Run:  python examples/textbook_backprop.py             (the worked step, then 10,000 steps)
      python examples/textbook_backprop.py --epochs 0  (the worked step only)
"""

import argparse
import time

import numpy as np

import symbackprop as sb

# -- the example's numbers -----------------------------------------------------------------------
INPUTS = [0.05, 0.10]
TARGETS = [0.01, 0.99]
WEIGHTS = {"w1": 0.15, "w2": 0.20, "w3": 0.25, "w4": 0.30, "w5": 0.40, "w6": 0.45, "w7": 0.50, "w8": 0.55}
BIASES = {"b1": 0.35, "b2": 0.60}
LEARNING_RATE = 0.5

# The textbook draws one weight per arrow; symbackprop keeps a layer's weights in a matrix.
# With z = i·W, the element W[r, c] connects unit r of one layer to unit c of the next, so
# h1 is fed by w1 (from i1) and w2 (from i2), h2 by w3 and w4, o1 by w5 (from h1) and w6
# (from h2), o2 by w7 and w8. The expanded formulas call W[r, c] "W1_rc" (counting from 1).
PLACES = {
    "w1": ("W1", 0, 0),
    "w2": ("W1", 1, 0),
    "w3": ("W1", 0, 1),
    "w4": ("W1", 1, 1),
    "w5": ("W2", 0, 0),
    "w6": ("W2", 1, 0),
    "w7": ("W2", 0, 1),
    "w8": ("W2", 1, 1),
}


def weight_matrix(layer: str) -> np.ndarray:
    """The textbook's weights of one layer, placed in a 2x2 matrix."""
    matrix = np.zeros((2, 2))
    for name, (where, row, column) in PLACES.items():
        if where == layer:
            matrix[row, column] = WEIGHTS[name]
    return matrix


def element(name: str, row: int, column: int) -> str:
    """symbackprop's name for an element in the expanded view: W1[1, 0] is 'W1_21'."""
    return f"{name}_{row + 1}{column + 1}"


class Network:
    """The 2-2-2 network as a graph, with the gradients and the update the board shows."""

    def __init__(self):
        # float64 throughout, so the printed digits are exact to the last one shown. The
        # biases are params like the weights, but the textbook never updates them, nor do we.
        self.i = sb.input("i", (None, 2), dtype="float64")
        self.t = sb.input("t", (None, 2), dtype="float64")
        self.W1 = sb.param("W1", (2, 2), init=weight_matrix("W1"), dtype="float64")
        self.W2 = sb.param("W2", (2, 2), init=weight_matrix("W2"), dtype="float64")
        b1 = sb.param("b1", (), init=np.array(BIASES["b1"]), dtype="float64")  # one bias shared by h1 and h2
        b2 = sb.param("b2", (), init=np.array(BIASES["b2"]), dtype="float64")  # one shared by o1 and o2
        self.net_h = self.i @ self.W1 + b1
        self.out_h = sb.sigmoid(self.net_h)
        self.net_o = self.out_h @ self.W2 + b2
        self.out_o = sb.sigmoid(self.net_o)
        self.error = 0.5 * ((self.t - self.out_o) ** 2).sum()  # E = ½Σ(target − out)², for our one example

        # Everything else on the board is a gradient of E: with respect to the outputs and the
        # net inputs of both layers (the δs), and to the weights. One sb.grad call
        # differentiates once and shares the work between them.
        self.gradients = sb.grad(self.error, [self.out_o, self.net_o, self.out_h, self.net_h, self.W1, self.W2])
        self.d_out_o, self.delta_o, self.d_out_h, self.delta_h, self.grad_W1, self.grad_W2 = self.gradients
        # The gradient-descent step is a graph too: w ← w − η·∂E/∂w.
        self.new_W1 = self.W1 - LEARNING_RATE * self.grad_W1
        self.new_W2 = self.W2 - LEARNING_RATE * self.grad_W2
        self.feeds = {self.i: [INPUTS], self.t: [TARGETS]}


class Board:
    """Prints quantities as ``textbook name | symbackprop's formula | value``."""

    def __init__(self, net: Network):
        # The values, all from the NumPy reference evaluator.
        tensors = [net.net_h, net.out_h, net.net_o, net.out_o, net.error, *net.gradients, net.new_W1, net.new_W2]
        self.value = dict(zip(tensors, sb.evaluate(tensors, net.feeds)))
        # The derivation element by element. Its labels are symbackprop's: L is E, z and h are
        # the net input and output of a layer, δ2_1 = ∂L/∂z2_1.
        printed = str(sb.formula([net.error, *net.gradients], expand=True))
        self.formula = dict(line.split(" = ", 1) for line in printed.splitlines())

    def line(self, name: str, label: str, value: float) -> None:
        print(f"  {name:<11} {label + ' = ' + self.formula[label]:<52} = {value:12.9f}")


def print_legend(net: Network) -> None:
    print("The network: inputs i1, i2 -> hidden units h1, h2 -> outputs o1, o2, every unit a sigmoid.")
    print("symbackprop's names for the textbook's quantities (expanded view, one example):")
    print("  i1, i2 = i_1, i_2   targets = t_1, t_2   net_h = z1   out_h = h1   net_o = z2   out_o = h2   E = L")
    for layer in ("W1", "W2"):
        weights = [name for name, place in PLACES.items() if place[0] == layer]
        print("".join(f"  {name} = {element(*PLACES[name])} = {WEIGHTS[name]:.2f}" for name in weights))
    print(f"  b1 = {BIASES['b1']:.2f}, b2 = {BIASES['b2']:.2f}; inputs {INPUTS}, targets {TARGETS}")
    print("\nThe error, as derived:", str(sb.formula(net.error)).splitlines()[-1])


def print_forward(net: Network, board: Board) -> None:
    print("\nForward pass")
    for layer, net_in, out, unit in (("1", net.net_h, net.out_h, "h"), ("2", net.net_o, net.out_o, "o")):
        for k in range(2):
            board.line(f"net_{unit}{k + 1}", f"z{layer}_{k + 1}", board.value[net_in][0, k])
        for k in range(2):
            board.line(f"out_{unit}{k + 1}", f"h{layer}_{k + 1}", board.value[out][0, k])
    board.line("E", "L", board.value[net.error])


def print_backward(net: Network, board: Board) -> None:
    print("\nBackward pass, output layer: δ_o = ∂E/∂net_o = ∂E/∂out_o · out_o·(1 − out_o)")
    for k in range(2):
        board.line(f"∂E/∂out_o{k + 1}", f"∂L/∂h2_{k + 1}", board.value[net.d_out_o][0, k])
        board.line(f"δ_o{k + 1}", f"δ2_{k + 1}", board.value[net.delta_o][0, k])
    print("Backward pass, hidden layer: each hidden unit collects the δs of the outputs it feeds")
    for k in range(2):
        board.line(f"∂E/∂out_h{k + 1}", f"∂L/∂h1_{k + 1}", board.value[net.d_out_h][0, k])
        board.line(f"δ_h{k + 1}", f"δ1_{k + 1}", board.value[net.delta_h][0, k])


def print_updates(net: Network, board: Board) -> None:
    print(f"\nGradients, and the updates w ← w − η·∂E/∂w with η = {LEARNING_RATE}")
    gradient_of = {"W1": board.value[net.grad_W1], "W2": board.value[net.grad_W2]}
    updated = {"W1": board.value[net.new_W1], "W2": board.value[net.new_W2]}
    for name in ["w5", "w6", "w7", "w8", "w1", "w2", "w3", "w4"]:  # in the order backpropagation reaches them
        layer, row, column = PLACES[name]
        label = f"∂L/∂{element(layer, row, column)}"
        gradient, new = gradient_of[layer][row, column], updated[layer][row, column]
        written = f"{gradient:.9f}" if gradient >= 0 else f"({gradient:.9f})"
        print(
            f"  ∂E/∂{name} = {label + ' = ' + board.formula[label]:<26} = {gradient:12.9f}    "
            f"{name} ← {WEIGHTS[name]:.2f} − {LEARNING_RATE}·{written} = {new:.9f}"
        )


def repeat_compiled(net: Network, steps: int) -> None:
    """Run ``steps`` steps of gradient descent, the worked one first, with one compiled function."""
    # The function returns the error (before this step's update) and the updated weights;
    # Python copies the new weights into the params, which the next call reads.
    started = time.perf_counter()
    step = sb.compile([net.error, net.new_W1, net.new_W2], [net.i, net.t], fast_math=False)
    print(f"\nThe same step, compiled ({time.perf_counter() - started:.1f} s), repeated {steps} times:")
    x_data, t_data = np.array([INPUTS]), np.array([TARGETS])
    started = time.perf_counter()
    for number in range(1, steps + 1):
        error, net.W1.value, net.W2.value = step(x_data, t_data)
        if number in (1, 2, steps) or np.log10(number).is_integer():
            print(f"  step {number:>6}: E = {float(error):.10f}")
    seconds = time.perf_counter() - started
    outputs, error = sb.evaluate([net.out_o, net.error], net.feeds)
    print(
        f"After {steps} steps ({seconds:.2f} s) the outputs are {outputs[0, 0]:.9f} and {outputs[0, 1]:.9f} "
        f"(targets {TARGETS[0]} and {TARGETS[1]}); the error is {float(error):.10f}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10_000, help="training steps in all, the worked one included")
    args = parser.parse_args()

    net = Network()
    board = Board(net)
    print_legend(net)
    print_forward(net, board)
    print_backward(net, board)
    print_updates(net, board)
    if args.epochs > 0:
        repeat_compiled(net, args.epochs)


if __name__ == "__main__":
    main()
