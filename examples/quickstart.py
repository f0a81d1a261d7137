"""Define a small network, show the gradients SymPy derived, check them, and train it.

The network learns XOR with the NumPy reference evaluator. Run: python examples/quickstart.py
"""

import numpy as np

import symbackprop as sb

# The model: 2 inputs, 4 tanh units, 1 logit; binary cross-entropy on the logit.
x = sb.input("x", (None, 2))
y = sb.input("y", (None, 1))
W1 = sb.param("W1", (2, 4), init="glorot_uniform", seed=1)
b1 = sb.param("b1", (4,))
W2 = sb.param("W2", (4, 1), init="glorot_uniform", seed=2)
b2 = sb.param("b2", (1,))
logit = sb.tanh(x @ W1 + b1) @ W2 + b2
loss = sb.binary_cross_entropy(logit, y)
params = [W1, b1, W2, b2]
grads = sb.grad(loss, params)

print("The gradients, as derived:")
print(sb.formula(grads))

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([[0], [1], [1], [0]], dtype=np.float32)
feeds = {x: X, y: Y}

checks = sb.check_grads(loss, params, feeds)
print("\nGradient check against central differences (float64):")
for check in checks:
    print(f"  {check}")

print("\nTraining with plain gradient descent (learning rate 0.5):")
for step in range(301):
    loss_value, *grad_values = sb.evaluate([loss, *grads], feeds)
    for p, g in zip(params, grad_values):
        p.value -= 0.5 * g
    if step % 100 == 0:
        print(f"  step {step:3d}  loss {loss_value:.4f}")

probabilities = 1 / (1 + np.exp(-sb.evaluate(logit, feeds)))
print("\nXOR predictions:", [round(float(p), 3) for p in probabilities.ravel()])
assert np.array_equal(probabilities.ravel() > 0.5, Y.ravel() > 0.5), "the network did not learn XOR"
