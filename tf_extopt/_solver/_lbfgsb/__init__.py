"""L-BFGS-B's pieces: Cauchy point, compact form, subspace step, small dense
problems and the batched small-matrix products they share."""
