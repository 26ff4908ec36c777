"""pyti: test a Python package inside a throwaway, network-less QEMU guest."""

__version__ = "0.1.0"
