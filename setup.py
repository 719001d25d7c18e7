"""Packaging for tf_extopt: fast, compiled optimisers for TensorFlow 2."""

import setuptools

with open("README.md", encoding="utf-8") as readme:
    LONG_DESCRIPTION = readme.read()

setuptools.setup(
    name="tf_extopt",
    version="0.1.0",
    description=(
        "Compiled, batched L-BFGS and L-BFGS-B for TensorFlow 2, SciPy "
        "optimizers for TF2/Keras/TF1 code, and Keras training with L-BFGS."
    ),
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tf_extopt", "tf_extopt.*"]),
    python_requires=">=3.9",
    install_requires=[
        "tensorflow>=2.16",
        "numpy",
        "scipy",
    ],
    extras_require={
        # Test-only: pytest-xdist runs the suite in parallel processes; TFP
        # as an oracle (it needs tf-keras to import under
        # Keras 3), tf-keras models, tensorboard for Keras' TensorBoard
        # callback, and the client libraries of tests/test_clients.py
        # (DeepXDE >= 1.10 has the TF2 L-BFGS path it patches; GPflow 2 the
        # training_loss API); none is imported by the package itself.
        "test": [
            "pytest",
            "pytest-xdist",
            "tensorflow-probability>=0.24",
            "tf-keras",
            "tensorboard",
            "deepxde>=1.10",
            "gpflow>=2.9",
        ],
        "bench": ["tensorflow-probability>=0.24", "tf-keras", "gpflow>=2.9",
                  "deepxde>=1.10"],
        "examples": ["matplotlib"],
        # The documentation site (mkdocs.yml): mkdocstrings reads the
        # docstrings with griffe, statically, so TensorFlow is not imported.
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26",
                 "pymdown-extensions"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Mathematics",
        "License :: OSI Approved :: Apache Software License",
    ],
)
