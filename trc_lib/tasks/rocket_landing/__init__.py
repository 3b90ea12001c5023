"""The rocket landing: minimum-fuel powered descent on Mars in 3-D, a task with a free flight time.

    problem.py       the vehicle, the exact interval dynamics, the constraints (RocketLanding)
    cone_program.py  its oracle: lossless convexification, a cone program per flight time, the
                     best flight time by a scan and a scalar search (Clarabel)
    nlp_check.py     the same problem as a non-convex NLP for IPOPT: the cone program's check
    model.py         the network's answer read as thrusts within the annulus and a flight time,
                     and its correction (Gauss-Newton steps that land and keep the glide slope)
    flight.py        the flight and its Jacobian, compiled (fast/landing_flight.c)
    evaluate.py      landing metrics in physical units, `trc compare`; guidance.py: ZEM/ZEV guidance
    closed_loop.py   re-planning under gusts; explorer.py, plots.py: its sliders and figures

The core never names it: it reads the landing through the hooks of the task interface
(trc_lib/task.py), which RocketLanding implements (problem.py): a free final time (the flight
time in every answer, datasets' time_horizons), its own oracle object, its own network
(model_class, new_model), its own scoring (evaluation, comparison), its notebook (08), what it
cannot do yet (unavailable), and from_options / from_dict for the command line and records.
It is not a Task subclass: its dynamics are exact per interval (a constant thrust per unit
mass), not an RK4 integration of a vector field, so it brings its own rollout.
"""
