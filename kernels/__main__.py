"""``python -m hybrids.kernels``: which backends of each op are available here, and which one
each device would use."""

from hybrids.kernels import describe

if __name__ == "__main__":
    print(describe())
