"""The local process around the model: the `log3d` command, the ZeroMQ job server, training."""
