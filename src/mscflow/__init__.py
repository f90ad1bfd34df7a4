"""mscflow."""
