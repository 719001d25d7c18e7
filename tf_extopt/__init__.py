"""tf_extopt: the best optimiser for the job, in TensorFlow 2."""

from tf_extopt._solver._eager import NotCompiledWarning
from tf_extopt._results import LBfgsOptimizerResults
from tf_extopt._results import converged_all
from tf_extopt._results import converged_any
from tf_extopt.lbfgs import lbfgs_minimize
from tf_extopt.lbfgsb import lbfgsb_minimize
from tf_extopt.external_optimizer import ExternalOptimizerInterface
from tf_extopt.external_optimizer import ScipyOptimizerInterface
from tf_extopt.lbfgs_interface import LbfgsOptimizerInterface
from tf_extopt import keras  # pylint: disable=redefined-builtin

__version__ = "0.1.0"

__all__ = [
    "ExternalOptimizerInterface",
    "LbfgsOptimizerInterface",
    "ScipyOptimizerInterface",
    "LBfgsOptimizerResults",
    "NotCompiledWarning",
    "converged_all",
    "converged_any",
    "lbfgs_minimize",
    "lbfgsb_minimize",
]
