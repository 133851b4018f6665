"""Rendezvous for torch.distributed groups that listens only where it must: on the master's own address; and
the one `free_port` every rendezvous (learner ranks, weight sync, the local cluster's metrics port) starts from.

torch's TCPStore server (and so `init_method="env://"`, which DeepSpeed uses) listens on every interface
("::"), whatever MASTER_ADDR says; on a loopback-only local run that is the one port reachable from the network.
Here the master binds its listening socket to `host` itself and hands the descriptor to TCPStore
(`master_listen_fd`), and gloo's data connections are pinned to the interface that carries `host`.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any


def free_port(host: str = "") -> int:
    """A TCP port that is free right now on `host` ("" = every interface); the caller binds it moments later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tcp_store(host: str, port: int, rank: int, world_size: int, timeout_s: float = 600.0) -> Any:
    """A TCPStore whose server (rank 0) listens on `host:port` only; other ranks connect to it."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, timeout, wait_for_workers=False)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    # detach: the descriptor now belongs to the store's server, not to a Python object that could close it
    return dist.TCPStore(host, port, world_size, True, timeout, wait_for_workers=False,
                         master_listen_fd=listener.detach())


def pin_gloo_to(host: str) -> None:
    """Make gloo connect and listen on the interface that holds `host` (unless the user chose one already)."""
    import psutil

    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == host for a in addresses):
            os.environ["GLOO_SOCKET_IFNAME"] = name
            return
