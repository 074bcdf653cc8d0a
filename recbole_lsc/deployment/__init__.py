"""The device-cloud split for real: the cloud's candidate service, and the replay benchmark
that drives device clients against it (docs/deployment.md)."""
