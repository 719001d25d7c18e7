"""The solver wing: L-BFGS and L-BFGS-B on plain tensors.

Reached from outside only through `tf_extopt.lbfgs.lbfgs_minimize` and
`tf_extopt.lbfgsb.lbfgsb_minimize`; `_lbfgsb` holds L-BFGS-B's own pieces.
"""
