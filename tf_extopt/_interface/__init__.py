"""The interface wing: variables, Keras models, TF1 sessions and SciPy.

Turns a model's variables and loss into a function of one flat position and
hands it to the solver through `lbfgs_minimize` / `lbfgsb_minimize` only
(checked by `tests/test_layout.py`).
"""
