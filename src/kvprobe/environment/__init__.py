"""Facts about where a measurement is taken: host and cgroup memory, container evidence, GPUs.

`facts.collect` gathers them into the `Environment` block every result carries.
"""
