"""Measuring an engine that spans several nodes through Ray.

`agent.NodeAgent` runs on every node (a Ray actor): it samples and guards that node's memory,
measures the trial's processes there and ends them at teardown. `ray_cluster.RayCluster` is the
probe's side: it places one agent per alive node of the cluster the user names (--ray-address),
and the trial runner calls it around every engine start.
"""
