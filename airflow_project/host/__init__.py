"""Leaf helpers for what happens on this machine: files, ports, readiness probes, processes.

Stdlib and psutil only, no project imports, so every layer (serving, local, tests) can use
them. Each concept has one implementation here.
"""
