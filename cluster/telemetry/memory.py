"""Peak resident memory (RSS) of a job's processes: the drivers and every live actor of the Ray cluster.

    rows = peak_rss_rows()      # [{"process": "RolloutWorker", "pid": 123, "peak_rss_mb": 412.0}, ...]
    memory_line(rows)           # "peak RSS (MB)   driver 520, ControllerActor 610, RolloutWorker 412, ..."

The peak is the kernel's high-water mark (VmHWM in /proc/<pid>/status), so nothing samples or runs inside the
actors: the summary reads it for the processes on its own node at the end of the run (actors on other nodes
are listed without a figure). Process ids come from Ray's GCS tables (actors and drivers), which answer without
the dashboard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak RSS in MB (VmHWM), or None when it is gone or not readable here."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_rows() -> list[dict[str, Any]]:
    """Live drivers and actors of the connected Ray cluster with their peak RSS ([] when not connected)."""
    import ray

    if not ray.is_initialized():
        return []
    from ray._private import state  # GCS tables: unlike ray.util.state, no dashboard needed

    here, here_ip = ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
    rows = [{"process": "driver", "pid": int(job["DriverPid"]), "local": job.get("DriverIPAddress") == here_ip}
            for job in state.jobs() if not job.get("IsDead") and job.get("DriverPid")]
    for actor in state.actors().values():
        if actor.get("State") == "ALIVE" and actor.get("Pid"):
            rows.append({"process": actor.get("ActorClassName", "actor"), "pid": int(actor["Pid"]),
                         "local": actor.get("Address", {}).get("NodeID") == here})
    for row in rows:
        row["peak_rss_mb"] = peak_rss_mb(row["pid"]) if row.pop("local") else None
    return rows


def memory_line(rows: list[dict[str, Any]]) -> str | None:
    """One summary line, processes in table order ("?" = on another node); None without rows."""
    if not rows:
        return None
    parts = [f"{r['process']} {r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else f"{r['process']} ?"
             for r in rows]
    return "peak RSS (MB)   " + ", ".join(parts)
