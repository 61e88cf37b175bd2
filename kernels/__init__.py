"""fusionnet's kernel library (installed as ``fusionnet.kernels``; see README.md here)."""
