"""The front door, the top floor: the `segr1` command (cli.py) and the commands that need no running job
(`segr1 eval` of a checkpoint, `segr1 predict`). It may import every package below; none imports it."""
