"""seedbed: bootstrap a cluster to GitOps with its Git repository hosted on the cluster itself."""

__version__ = "0.1.0"
