"""Figure functions. Each returns a matplotlib Figure and never calls ``show()``; one module per experiment."""
