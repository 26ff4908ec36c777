"""pyti's guest agent: runs as root in the guest, owns the virtio port, runs the tasks.

Everything imported on the boot path is paid on every run under TCG: keep it lean.
"""

__version__ = "0.1.0"
