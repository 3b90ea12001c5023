"""Studies beyond the training guide, each built on the core (never on the faces):

    ablation.py        does recursion help? an MLP against TRC with 1-8 steps, +- feedback, +- deep supervision
    generalization.py  outside the training boxes: wider boxes, other targets and horizons, another μ
    closed_loop.py     receding horizon with disturbances and a mismatched plant
    projection.py      Newton steps of TRC's answer onto x_N = x* within the bound
    hybrid.py          IPOPT warm-started from TRC's answer
    teacher.py         a sub-optimal teacher (clipped linearized LQR) for fine-tuning past it
    finetune.py        training on the task's own cost through the differentiable simulator
"""
