"""The rocket landing: minimum-fuel powered descent on Mars in 3-D, a task with a free flight time.

    problem.py       the vehicle, the exact interval dynamics, the constraints (RocketLanding)
    cone_program.py  its oracle: lossless convexification, a cone program per flight time, the
                     best flight time by a scan and a scalar search (Clarabel)
    nlp_check.py     the same problem as a non-convex NLP for IPOPT: the cone program's check
    model.py         the network's answer read as thrusts within the annulus and a flight time,
                     and its correction (Gauss-Newton steps that land and keep the glide slope)
    flight.py        the flight and its Jacobian, compiled (fast/landing_flight.c)
    evaluate.py      landing metrics in physical units; guidance.py: ZEM/ZEV guidance
    closed_loop.py   re-planning under gusts; explorer.py, plots.py: its sliders and figures

It is a task of its own rather than a Task subclass: what it needs beyond a fixed-horizon task
(the free flight time, the annulus, its oracle, its correction) is still read by the core where
the landing is named.
"""
