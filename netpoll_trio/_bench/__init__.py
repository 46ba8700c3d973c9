"""The demo and benchmark behind ``python -m netpoll_trio`` (not part of the public API)."""
