"""Test-session setup: two logical CPU devices.

`tests/test_distribute.py` runs `tf.distribute.MirroredStrategy` over two
replicas in this process. TensorFlow can split a device only before it
initializes its devices, which the first op of any test module does, so the
split happens here, before any module is collected. Every other test places
its ops on the first device, as it would without the split.
"""

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)
