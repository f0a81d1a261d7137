"""The LLVM back end: target setup, JIT compilation with an on-disk object cache, and vectorised maths in IR."""
