"""tf_extopt: the best optimiser for the job, in TensorFlow 2."""

__version__ = "0.1.0"

__all__ = []
