"""stagewise: progressive delivery for services on hosts, VMs and single boxes."""

__version__ = "0.1.0"
