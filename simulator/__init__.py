"""The physical world of the machine, and the stand-ins for its hardware built on it."""
