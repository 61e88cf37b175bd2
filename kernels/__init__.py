"""fusionnet's kernel library (shipped in a wheel as ``fusionnet/kernels``; see README.md here)."""
