"""The fast paths: the same numbers as the reference, computed in C. Skip this folder on a first read.

The reference is the pure-torch model (model.py: the network, the recursion, the losses) and each
task's eager rollout (task.py: Task.rollout_torch, Task.terminal_state_torch). What is here only
makes them fast, and is tested against them:

    forward.c, forward.py        the model's forward pass and halting in C (batch 1; bfloat16 on AMX
                                 tiles); parity: tests/test_fast_forward.py, tests/test_forward_tiles.py
    compiled_rollout.py          a nonlinear task's x_N and its derivative, generated as C from its
                                 vector field; parity: tests/test_terminal_map.py
    landing_flight.c             the rocket landing's flight and Jacobian for its correction;
                                 parity: tests/test_landing_model.py
    c_library.py                 compiling C once per machine and CPU, cached by content

Without a C compiler every path falls back to the reference, with the same answers, only slower.
"""
