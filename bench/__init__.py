"""bench: benchmark container runtimes through their cgroup files."""

__version__ = "0.1.0"
